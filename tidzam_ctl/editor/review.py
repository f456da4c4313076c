"""``tidzam_ctl samples review``: the extracted samples in the browsing app, each review a
``SampleLabelled`` event.

``ReviewBrowser`` is the ``Browser`` (``browsers``) over rows of the ``samples`` table
(``projections/sql/0008_samples.sql``): the classes are the proposed labels of the
unchecked samples, then ``✓ <label>`` for the reviewed ones; a row is a sample; the
spectrogram is the window the model scored; play is the whole sample, its context
included. Accept, relabel, discard and undo publish ``SampleLabelled`` through an
injected callable (NATS in production: ``commands/samples.py``), then change the browser's row as
the projection will: the screen never waits for the projection, and a review that
could not be published is not shown either. ``ReviewApp`` is ``BrowserApp`` with the
reviewer's keys.

Audio: float32 mono (n,) at ``FeatureParams.sample_rate`` (48 kHz by default),
decoded from the sample's FLAC; features: log-mel float32 (frames, mels).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from audio.decode import AudioDecodeError, decode_file
from bus_schemas import SampleLabelled
from bus_schemas.control import CLASS_NAME, DISCARDED
from inference.features import F32, FeatureParams
from inference.scoring import UNKNOWN
from learning.corpus.packages import CLASSES
from tidzam_ctl.editor.app import BrowserApp
from tidzam_ctl.editor.browsers import MAX_ROWS, Item
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.player import Player
from tidzam_ctl.editor.spectrogram import audio_spectrogram

REVIEWED = "✓ "  # before a reviewed label in the class list: ``✓ rain``
_REASONS = {"rate": "taken at the rule's rate", "auto": "taken for its rarity",
            "unknown": "the model said unknown", "hesitant": "the model hesitated"}


@dataclass
class ReviewRow:
    """A sample, as a row of the ``samples`` table (one field per column read); the
    review fields change as this session publishes. Times are UTC."""

    sample_id: str
    time: datetime  # the file's start (the window's context included)
    end_time: datetime
    window_start: datetime  # the window the model scored
    window_end: datetime
    source: str
    channel: int
    label: str  # proposed by the model (or ``unknown``)
    confidence: float
    reason: str  # rate, auto, unknown, hesitant
    path: str  # relative to the samples folder
    labels: tuple[str, ...] = ()  # the model's whole vector
    scores: tuple[float, ...] = ()
    sample_rate: int = 0  # 0: not recorded
    model_id: str = ""
    model_version: str = ""
    reviewed_label: str | None = None  # None: unchecked
    previous_label: str | None = None
    reviewed_by: str | None = None

    @classmethod
    def from_sql(cls, row: Mapping[str, Any]) -> ReviewRow:
        """A row read with ``COLUMNS`` (arrays as lists, times in any zone)."""
        values = {name: row[name] for name in COLUMNS}
        for name in ("time", "end_time", "window_start", "window_end"):
            values[name] = row[name].astimezone(UTC)
        values["labels"] = tuple(row["labels"] or ())
        values["scores"] = tuple(float(s) for s in row["scores"] or ())
        values["sample_rate"] = row["sample_rate"] or 0
        values["model_id"], values["model_version"] = (row["model_id"] or "",
                                                       row["model_version"] or "")
        return cls(**values)

    @property
    def group(self) -> str:
        """Its entry in the class list: the proposed label, or ``✓ <reviewed label>``."""
        return self.label if self.reviewed_label is None else REVIEWED + self.reviewed_label


COLUMNS = tuple(f.name for f in fields(ReviewRow))  # the ``samples`` columns to read

Load = Callable[[], Iterable[ReviewRow]]
Publish = Callable[[SampleLabelled], None]  # stores the event or raises EditorError


def _matches(row: ReviewRow, words: list[str]) -> bool:
    text = " ".join((row.sample_id, row.source, row.reason, row.path, row.label,
                     row.reviewed_label or "")).lower()
    return all(w in text for w in words)


class ReviewBrowser:
    """Samples to review for the browsing app (keys: sample ids). ``load`` gives the
    rows (once, now); ``publish`` stores a ``SampleLabelled`` event or raises
    ``EditorError``. Each review is published at once: there is never anything to save."""

    columns: tuple[str, ...] = ("time (UTC)", "source.ch", "label", "conf", "reason",
                                "reviewed")
    dirty = False

    def __init__(self, load: Load, publish: Publish, root: Path, by: str,
                 params: FeatureParams | None = None) -> None:
        rows = sorted(load(), key=lambda r: (r.window_start, r.sample_id))
        self.rows = {r.sample_id: r for r in rows}
        self.publish = publish
        self.root = root
        self.by = by
        self.params = params or FeatureParams()
        self.title = f"review the samples in {root} as {by}"
        self.published = 0  # events published in this session
        self._undo: list[tuple[str, str | None]] = []  # (sample id, its label before)
        self._shown: list[str] = []  # the keys last listed, in order
        self._focus: tuple[str, str] | None = None
        self._audio: tuple[str, F32] | None = None  # the last sample decoded
        self._last_ns = 0

    # -- what the app shows

    def classes(self) -> list[tuple[str, int]]:
        counts = Counter(r.group for r in self.rows.values())
        names = sorted(counts, key=lambda g: (g.startswith(REVIEWED), g))
        return [(g, counts[g]) for g in names]

    def items(self, label: str, text: str) -> list[Item]:
        words = text.lower().split()
        rows = [r for r in self.rows.values() if r.group == label and _matches(r, words)]
        rows = rows[:MAX_ROWS]
        self._shown = [r.sample_id for r in rows]
        return [Item(r.sample_id, (f"{r.window_start:%m-%d %H:%M:%S}",
                                   f"{r.source}.{r.channel}", r.label, f"{r.confidence:.2f}",
                                   r.reason, r.reviewed_label or "-")) for r in rows]

    def start_group(self, label: str) -> str:
        """The class-list entry for ``label``: its unchecked samples, else its reviewed ones."""
        names = [g for g, _ in self.classes()]
        for group in (label, REVIEWED + label):
            if group in names:
                return group
        raise EditorError(f"no sample proposed or reviewed as {label!r} here; classes: "
                          f"{', '.join(names) or 'none'}")

    def features(self, key: str) -> F32:
        """The log-mel frames (frames, mels) of the window the model scored."""
        row = self._row(key)
        mono, rate = self._mono(row), self.params.sample_rate
        a = max(0, round((row.window_start - row.time).total_seconds() * rate))
        b = min(mono.shape[0], round((row.window_end - row.time).total_seconds() * rate))
        return audio_spectrogram(mono[a:b] if b > a else mono, self.params)

    def details(self, key: str) -> str:
        r = self._row(key)
        top = sorted(zip(r.labels, r.scores, strict=True), key=lambda ls: -ls[1])[:5]
        p = self.params
        a, b = ((t - r.time).total_seconds() for t in (r.window_start, r.window_end))
        rate = f", {r.sample_rate} Hz" if r.sample_rate else ""
        lines = [
            f"{r.sample_id}: proposed {r.label} {r.confidence:.2f} "
            f"({_REASONS.get(r.reason, r.reason)})",
            "top 5   " + ("  ".join(f"{label} {s:.2f}" for label, s in top) or "(no scores)"),
            f"file    {r.path}, {(r.end_time - r.time).total_seconds():.1f} s{rate}",
            f"shown   its window {a:.2f}-{b:.2f} s, {p.fmin:g}-{p.fmax:g} Hz (mel, low at "
            "the bottom)",
            f"heard   {r.source} ch {r.channel}, {r.window_start:%Y-%m-%d %H:%M:%S} UTC"
            + (f", {r.model_id} {r.model_version}" if r.model_id else "")]
        if r.reviewed_label is not None:
            lines.append(f"review  {r.reviewed_label}, by {r.reviewed_by or '?'}")
        elif r.label == UNKNOWN:
            lines.append("review  unchecked, no class proposed: r gives one, d discards")
        else:
            lines.append(f"review  unchecked: a accepts {r.label}, r relabels, d discards")
        return "\n".join(lines)

    def audio(self, key: str) -> tuple[F32, int]:
        """The whole sample, its context included: mono (n,) at the feature rate."""
        return self._mono(self._row(key)), self.params.sample_rate

    def label_choices(self) -> list[str]:
        """The model's labels, those given already, then the bootstrap corpus's classes."""
        seen: dict[str, None] = {}  # an ordered set
        for r in self.rows.values():
            seen.update(dict.fromkeys((*r.labels, r.label)))
            if r.reviewed_label is not None:
                seen[r.reviewed_label] = None
        seen.update(dict.fromkeys(CLASSES))
        return [c for c in seen if c not in (UNKNOWN, DISCARDED)]

    # -- reviews

    def accept(self, key: str) -> str:
        row = self._row(key)
        if row.label == UNKNOWN:
            self._focus = None
            raise EditorError(f"the model proposed no class for {key} ({UNKNOWN}): r gives "
                              "it one, d discards it")
        return self._review(row, row.label, f"accepted {key} as {row.label}")

    def relabel(self, key: str, label: str, whole_file: bool) -> str:
        """Give ``key`` the class ``label`` (a sample is one file: ``whole_file`` changes
        nothing)."""
        label = label.strip()
        if not CLASS_NAME.fullmatch(label):
            self._focus = None
            raise EditorError(f"{label!r} is not a class name (letters, digits, '_', '-' "
                              "between levels: birds-american_robin): nothing published")
        return self._review(self._row(key), label, f"relabelled {key} as {label}")

    def delete(self, key: str) -> str:
        """Discard ``key``: not a usable sample of any class."""
        return self._review(self._row(key), DISCARDED, f"discarded {key}")

    def undo(self) -> str:
        """Take this session's last review back: the label the sample had before it is
        published again, or an empty label (unchecked again) if it had none."""
        self._focus = None
        if not self._undo:
            raise EditorError("nothing to undo: no review in this session yet")
        key, before = self._undo[-1]
        row = self._row(key)
        self._send(row, before or "")
        self._undo.pop()
        self._focus = (row.group, key)
        return f"undone: {key} " + (f"back to {before}" if before else "unchecked again")

    def save(self) -> str:
        return "nothing to save: each review is published when it is made (u takes it back)"

    def take_focus(self) -> tuple[str, str] | None:
        """Where the cursor goes after the last change, (class, key), asked once: the
        sample after the one reviewed, the sample undone; None: where it is."""
        focus, self._focus = self._focus, None
        return focus

    def _review(self, row: ReviewRow, label: str, said: str) -> str:
        group, shown = row.group, self._shown
        at = shown.index(row.sample_id) if row.sample_id in shown else len(shown)
        after = shown[at + 1] if at + 1 < len(shown) else None
        self._focus = None
        if row.reviewed_label == label:
            said = f"{row.sample_id} is already {label}: nothing published"
        else:
            before = row.reviewed_label
            self._send(row, label)
            self._undo.append((row.sample_id, before))
        self._focus = (group, after) if after is not None else None
        return said

    def _send(self, row: ReviewRow, label: str) -> None:
        """Publish ``label`` for ``row`` (empty: withdraw its reviews), then apply it to
        the row as the projection does; nothing changes if the publish fails."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)  # the latest review wins
        event = SampleLabelled(sample_id=row.sample_id, label=label,
                               previous_label=row.reviewed_label or row.label, by=self.by,
                               at_ns=self._last_ns)
        self.publish(event)
        self.published += 1
        row.reviewed_label = event.label or None
        row.previous_label = event.previous_label or None
        row.reviewed_by = event.by or None

    def _row(self, key: str) -> ReviewRow:
        try:
            return self.rows[key]
        except KeyError:
            raise EditorError(f"no sample {key!r} in this review") from None

    def _mono(self, row: ReviewRow) -> F32:
        """The sample's first channel, (n,) at the feature rate (the last one is kept)."""
        if self._audio is not None and self._audio[0] == row.sample_id:
            return self._audio[1]
        try:
            audio, _ = decode_file(self.root / row.path, self.params.sample_rate)
        except AudioDecodeError as exc:
            raise EditorError(f"cannot read sample {row.sample_id} ({exc}): is "
                              f"{self.root} the samples folder (TIDZAM_SAMPLES_DIR)?") from None
        mono: F32 = audio[0]
        self._audio = (row.sample_id, mono)
        return mono


class ReviewApp(BrowserApp):
    """``BrowserApp`` for a reviewer: ``n`` or space skips a sample, ``d`` discards at once
    (``u`` takes it back), and after each review the cursor is on the next sample (after
    an undo, on the sample undone)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "delete", "discard"), Binding("n", "skip", "skip"),
        Binding("space", "skip", "skip", show=False),
        Binding("R", "relabel(False)", "relabel", show=False),
        Binding("s", "save", "save", show=False)]
    CSS = BrowserApp.CSS + "#rows { width: 3fr; }  #right { width: 2fr; min-width: 40; }" \
        "  #details { max-height: 12; }"

    def __init__(self, browser: ReviewBrowser, player: Player,
                 start_class: str | None = None) -> None:
        super().__init__(browser, player, start_class)
        self.review = browser

    def _run(self, change: Callable[[], str]) -> None:
        """``BrowserApp._run``, then the cursor to where the browser says; the outcome
        is said last (a long class's row limit is not said over it)."""
        try:
            said = change()
        except EditorError as exc:
            self.say(str(exc))
            return
        self.refresh_classes()
        focus = self.review.take_focus()
        if focus is not None:
            self.select(*focus)
        self.say(said)

    def select(self, group: str, key: str) -> None:
        """Put the cursor on ``key`` of the class ``group`` (if no filter hides it)."""
        if group != self.label and group in (g for g, _ in self.review.classes()):
            self.label = group
            self.refresh_classes()
        table = self.query_one("#rows", DataTable)
        try:
            row = table.get_row_index(key)
        except RowDoesNotExist:
            return
        with table.prevent(DataTable.RowHighlighted):
            table.move_cursor(row=row)
        self.show_item(key)

    def action_delete(self) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        self._run(lambda: self.review.delete(key))

    def action_skip(self) -> None:
        table = self.query_one("#rows", DataTable)
        key, after = self.key, table.cursor_row + 1
        if key is None or self.label is None or after >= table.row_count:
            self.say("no sample after this one in this class")
            return
        self.select(self.label, str(table.coordinate_to_cell_key(Coordinate(after, 0))
                                    .row_key.value))
        self.say(f"skipped {key}")
