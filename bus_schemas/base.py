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
TimeNs = Annotated[int, Field(ge=0)]


class Event(BaseModel):
    """Base of every event: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @abstractmethod
    def msg_id(self) -> str:
        """The deterministic ``Nats-Msg-Id`` of this fact (every event type defines it)."""
