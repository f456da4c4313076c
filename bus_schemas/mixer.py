"""The mixer board: which gain and mute each channel has, from its commands (pure).

Every ``MixerCommand`` ever published, applied in order, gives each channel's state:

- automatic commands (the gain controller) set the *auto* gain or mute;
- manual commands (a person) *pin* the channel: from the state in force, the one
  field they name (gain, or mute) is set, and automatic commands no longer reach the
  channel until a manual ``auto`` releases it (the auto state then applies again);
- a channel without commands passes its audio untouched (0 dB, not muted).

The gain stage (``producers``) keeps one board up to date and stamps each chunk with
its channel's state; ``tidzam_ctl mixer`` shows the same board.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bus_schemas.events import MixerCommand

Key = tuple[str, int]  # (source, channel)


@dataclass(frozen=True)
class ChannelState:
    gain_db: float = 0.0
    muted: bool = False
    origin: Literal["auto", "manual", "default"] = "default"
    command_id: str = ""
    reason: str = ""
    by: str = ""

    def same_sound(self, other: ChannelState) -> bool:
        """The same gain and mute (who decided it aside)."""
        return (self.gain_db, self.muted) == (other.gain_db, other.muted)


DEFAULT = ChannelState()


@dataclass
class Board:
    auto: dict[Key, ChannelState] = field(default_factory=dict)
    pinned: dict[Key, ChannelState] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # command ids applied (a redelivery: once)

    def apply(self, cmd: MixerCommand) -> bool:
        """Apply one command; False when it was applied before (same id)."""
        if cmd.command_id in self.seen:
            return False
        self.seen.add(cmd.command_id)
        key = (cmd.source, cmd.channel)
        if cmd.origin == "auto":
            self.auto[key] = _changed(self.auto.get(key, DEFAULT), cmd)
        elif cmd.action == "auto":
            self.pinned.pop(key, None)
        else:
            self.pinned[key] = _changed(self.state(*key), cmd)
        return True

    def state(self, source: str, channel: int) -> ChannelState:
        key = (source, channel)
        return self.pinned.get(key) or self.auto.get(key) or DEFAULT

    def is_pinned(self, source: str, channel: int) -> bool:
        return (source, channel) in self.pinned


def _changed(state: ChannelState, cmd: MixerCommand) -> ChannelState:
    if cmd.action == "gain":
        state = replace(state, gain_db=cmd.gain_db)
    else:
        state = replace(state, muted=cmd.action == "mute")
    return replace(state, origin=cmd.origin, command_id=cmd.command_id, reason=cmd.reason,
                   by=cmd.by)
