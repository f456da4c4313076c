"""The root of every error Tidzam raises on purpose.

A ``TidzamError`` is a failure at a boundary (a file, a URL, a server, a user's
input) whose message says what happened and what to do; ``tidzam_ctl`` prints
its message and exits with ``exit_code``, without a traceback. Anything else
that escapes is a bug and keeps its traceback (``tidzam_ctl -v``).
"""

from __future__ import annotations


class TidzamError(Exception):
    """An error a user can act on; ``exit_code`` is what the command line returns."""

    exit_code: int = 1
