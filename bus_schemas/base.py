"""The base of every event: the ``Event`` model and the field types events share.

Conventions:
- times are integers in nanoseconds since the Unix epoch (UTC), taken from the
  audio (archive file name, capture time), never from a consumer's wall clock;
- ``source`` names are NATS subject tokens (``[A-Za-z0-9_-]+``), channels are
  0-based integers;
- ``msg_id()`` is the deterministic ``Nats-Msg-Id``: publishing the same fact twice
  stores it once (within the stream's duplicate window), and projections upsert on
  the same natural key beyond it.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-64 letters, digits, '_' or '-' "
            "(it becomes part of a NATS subject)"
        )
    return value


Token = Annotated[str, AfterValidator(_check_token)]
Channel = Annotated[int, Field(ge=0, le=4095)]
# a time no recording has outside 1970..2099: a later one is a forgery or a bug, refused at
# decode (an int near 2**64 could not even be stored by PostgreSQL, and was retried forever)
MAX_TIME_NS = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z
TimeNs = Annotated[int, Field(ge=0, lt=MAX_TIME_NS)]
# a class name as models and rules spell it; bounded so that no index row overflows, and
# without control characters (a NUL byte cannot even be stored in PostgreSQL text)
Label = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Event(BaseModel):
    """Base of every event: immutable, strict about unknown fields."""

    # NaN and infinities are refused in every number: no score, level or gain is one
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @abstractmethod
    def msg_id(self) -> str:
        """The deterministic ``Nats-Msg-Id`` of this fact (every event type defines it)."""
