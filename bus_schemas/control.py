"""The CONTROL stream's events: the configuration history (sources, live streams,
extraction rules, model deployments, sample reviews), kept for ever."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bus_schemas.base import Channel, Event, Label, TimeNs, Token


class SourceAdded(Event):
    """A user wants this source loaded (the desired state; ``SourceLoaded`` is the actual).

    ``location`` is a path or URL (http, https, rtsp, icecast). ``channels`` selects
    channels (empty: all). ``permanent`` sources are reloaded after a failure or an
    end, with backoff. ``database`` is a folder of archive files
    ``<name>-YYYY-MM-DD-HH-MM-SS.ext``; with ``date`` the source plays the archive
    from that instant on, and the live ``location`` once the archive is exhausted.
    """

    event_type: ClassVar[str] = "SourceAdded"

    source: Token
    kind: Literal["file", "url", "jack", "live", "archive"]
    location: str
    channels: tuple[int, ...] = ()
    permanent: bool = False
    database: str = ""
    date_ns: TimeNs | None = None
    format: Literal["ogg", "copy"] = "ogg"
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.source.added.{self.source}.{self.at_ns}"


class SourceRemoved(Event):
    """A user wants this source stopped and forgotten."""

    event_type: ClassVar[str] = "SourceRemoved"

    source: Token
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.source.removed.{self.source}.{self.at_ns}"


class SourceLoaded(Event):
    """A source started publishing audio."""

    event_type: ClassVar[str] = "SourceLoaded"

    source: Token
    kind: Literal["file", "url", "jack", "live", "archive"]
    location: str
    channels: tuple[int, ...]
    sample_rate: int
    permanent: bool = False
    at_ns: TimeNs
    attempt: Annotated[int, Field(ge=0)] = 0

    def msg_id(self) -> str:
        return f"ctl.source.loaded.{self.source}.{self.at_ns}"


class SourceUnloaded(Event):
    event_type: ClassVar[str] = "SourceUnloaded"

    source: Token
    reason: str
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.source.unloaded.{self.source}.{self.at_ns}"


class SourceFailed(Event):
    """A source stopped with an error; ``will_retry`` when it is permanent."""

    event_type: ClassVar[str] = "SourceFailed"

    source: Token
    reason: str
    at_ns: TimeNs
    attempt: Annotated[int, Field(ge=0)] = 0
    will_retry: bool = False

    def msg_id(self) -> str:
        return f"ctl.source.failed.{self.source}.{self.at_ns}"


class LiveStreamOpened(Event):
    event_type: ClassVar[str] = "LiveStreamOpened"

    source: Token
    client: str
    sample_rate: int
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.live.opened.{self.source}.{self.at_ns}"


class LiveStreamClosed(Event):
    event_type: ClassVar[str] = "LiveStreamClosed"

    source: Token
    reason: str
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.live.closed.{self.source}.{self.at_ns}"


_SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9_*?-]{1,64}$")
_CLASS_PATTERN = re.compile(r"^[A-Za-z0-9_.*?-]{1,128}$")


def _check_source_pattern(value: str) -> str:
    if not _SOURCE_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a source name or pattern: use letters, digits, "
                         "'_', '-' and the wildcards '*' and '?'")
    return value


def _check_class_pattern(value: str) -> str:
    if not _CLASS_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a class pattern: use letters, digits, '_', '-', "
                         "'.' and the wildcards '*' and '?' (e.g. birds-*, unknown, *)")
    return value


SourcePattern = Annotated[str, AfterValidator(_check_source_pattern)]
ClassPattern = Annotated[str, AfterValidator(_check_class_pattern)]
Seconds = Annotated[float, Field(ge=0.0, le=60.0)]


class ExtractionRule(BaseModel):
    """Which windows to save as samples: where, what, how often, how long (v2).

    ``source`` and ``classes`` are shell-style patterns (``birds-*``, ``unknown``,
    ``*``); ``channels`` () is every channel. ``rate``: the probability of saving a
    matching window, or ``auto`` (rarer classes more often, ``unknown`` and windows
    where the model hesitates always). The sample is the window (or ``length_s``
    around its middle) with ``before_s`` and ``after_s`` of context; ``centred``
    keeps only windows whose sound sits in the middle (little energy at the edges);
    ``cooldown_s``: after a sample, a channel gives none for that long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: SourcePattern = "*"
    channels: tuple[Channel, ...] = ()
    classes: Annotated[tuple[ClassPattern, ...], Field(min_length=1)] = ("*",)
    rate: Literal["auto"] | Annotated[float, Field(ge=0.0, le=1.0)] = "auto"
    length_s: Annotated[float, Field(gt=0.0, le=60.0)] | None = None  # None: the window
    before_s: Seconds = 0.5
    after_s: Seconds = 0.5
    centred: bool = False
    cooldown_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 5.0
    destination: Token = "samples"

    @model_validator(mode="after")
    def _unique_channels(self) -> ExtractionRule:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channel listed twice in {list(self.channels)}")
        return self

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        """Where the rule applies: a set holds one rule per key."""
        return self.source, tuple(sorted(self.channels))

    def applies_to(self, source: str, channel: int) -> bool:
        return fnmatchcase(source, self.source) and (not self.channels
                                                     or channel in self.channels)

    def wants(self, label: str) -> bool:
        return any(fnmatchcase(label, pattern) for pattern in self.classes)


class ExtractionRulesSet(Event):
    """The whole rule set replaces the previous one (v2: rules of ``ExtractionRule`` v2).

    For a window, the rule that applies is the most specific one: a named source over
    a pattern (the longer its literal part, the more specific), then listed channels
    over every channel, fewer over more (``rule_for``)."""

    event_type: ClassVar[str] = "ExtractionRulesSet"
    schema_version: ClassVar[int] = 2

    rules: tuple[ExtractionRule, ...]
    at_ns: TimeNs
    by: str = ""

    @model_validator(mode="after")
    def _one_rule_per_key(self) -> ExtractionRulesSet:
        keys = [rule.key for rule in self.rules]
        if len(set(keys)) != len(keys):
            raise ValueError("two rules for the same source and channels")
        return self

    def rule_for(self, source: str, channel: int) -> ExtractionRule | None:
        """The most specific rule for a channel, None when no rule applies."""
        def specificity(rule: ExtractionRule) -> tuple[bool, int, bool, int]:
            literal = sum(c not in "*?" for c in rule.source)
            exact = literal == len(rule.source)
            return exact, literal, bool(rule.channels), -len(rule.channels)
        found = [r for r in self.rules if r.applies_to(source, channel)]
        return max(found, key=specificity) if found else None

    def msg_id(self) -> str:
        return f"ctl.rules.{self.at_ns}"


class ModelDeployed(Event):
    """A model version becomes the one classifiers use for ``model_id``.

    v2 carries ``sha256``, the registry's content digest of the version
    (``inference.registry.content_digest``): a classifier switches only to the
    id@version of its own registry whose files have that digest; ``path`` says where
    the publisher found it, for the log. v1 deploys read with an empty digest, which
    classifiers refuse: deploy the version again."""

    event_type: ClassVar[str] = "ModelDeployed"
    schema_version: ClassVar[int] = 2

    model_id: Token
    model_version: Annotated[str, Field(min_length=1, max_length=64)]
    sha256: Annotated[str, Field(pattern=r"^([0-9a-f]{64})?$")]
    path: Annotated[str, Field(max_length=4096)]
    labels: tuple[Label, ...]
    feature_params: dict[str, float | int | str]
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.model.{self.model_id}@{self.model_version}.{self.at_ns}"


CLASS_NAME = re.compile(r"[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*")  # levels joined by '-'
DISCARDED = "discarded"  # a reviewer's verdict on an extracted sample: no class at all


class SampleLabelled(Event):
    """A reviewer's class for an extracted sample; the latest review wins. An empty
    ``label`` withdraws the reviews (the undo of a first review): the sample is
    unchecked again."""

    event_type: ClassVar[str] = "SampleLabelled"

    sample_id: str
    label: str
    previous_label: str = ""
    by: str = ""
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.label.{self.sample_id}.{self.at_ns}"
