"""Errors of the command line, with the exit codes it uses."""

from __future__ import annotations

from bus_schemas.errors import TidzamError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class CliError(TidzamError, RuntimeError):
    """An error the user can act on: printed without a traceback."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = code
