"""How ``tidzam_ctl query`` prints rows: a table that fits the terminal with whole
timestamps, or CSV / JSON for scripts (ISO 8601 times, full precision)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # psycopg loads only when a query runs, not for every command
    from projections.queries import DetectionRow, EventRow

_NARROWEST = 4  # a shortened column keeps this many cells ("po…")


def stamp(moment: datetime) -> str:
    """``2026-06-01 05:00:00.000``: UTC to the millisecond, 23 cells."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S}.{utc.microsecond // 1000:03d}"


def clock_or_stamp(moment: datetime, day_of: datetime) -> str:
    """``05:00:12.750`` when ``moment`` falls on the same UTC day as ``day_of``, else whole."""
    whole = stamp(moment)
    return whole[11:] if whole[:10] == stamp(day_of)[:10] else whole


def _confidence(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def model_of(row: DetectionRow | EventRow) -> str:
    return f"{row.model_id}@{row.model_version}"


# ---------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Any], str]
    shrinks: bool = False  # names: cut with "…" so the times stay whole
    right: bool = False


def _time_columns(kind: str) -> list[Column]:
    if kind == "detections":
        return [Column("time (UTC)", lambda r: stamp(r.time))]
    return [Column("start (UTC)", lambda r: stamp(r.start)),
            Column("end", lambda r: clock_or_stamp(r.end, r.start))]


def _columns(kind: str, with_model: bool) -> list[Column]:
    columns = [*_time_columns(kind), Column("source", lambda r: r.source, shrinks=True),
               Column("ch", lambda r: str(r.channel), right=True),
               Column("label", lambda r: r.label, shrinks=True)]
    if kind == "detections":
        columns.append(Column("conf", lambda r: _confidence(r.confidence), right=True))
    else:
        columns += [Column("win", lambda r: str(r.windows), right=True),
                    Column("peak", lambda r: _confidence(r.peak_confidence), right=True),
                    Column("mean", lambda r: _confidence(r.mean_confidence), right=True)]
    if with_model:
        columns.append(Column("model", model_of, shrinks=True))
    return columns


def table(kind: str, rows: Sequence[Any], console: Console) -> Table:
    """The rows as a table no wider than ``console``: names shrink, times stay whole.

    The model gets a column only when the rows come from several (else the summary
    line names it), which leaves an 80-cell terminal room for the names.
    """
    columns = _columns(kind, with_model=len({model_of(r) for r in rows}) > 1)
    cells = [[c.cell(r) for c in columns] for r in rows]
    widths = [max([cell_len(c.header), *(cell_len(line[i]) for line in cells)])
              for i, c in enumerate(columns)]
    _shrink(widths, [c.shrinks for c in columns], console.width - _overhead(len(columns)))
    out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column, width in zip(columns, widths, strict=True):
        out.add_column(column.header, justify="right" if column.right else "left",
                       no_wrap=True, overflow="ellipsis", width=width)
    for line in cells:
        out.add_row(*line)
    return out


def _overhead(n_columns: int) -> int:
    """Cells the table adds between columns: one of padding, one of divider."""
    return 2 * (n_columns - 1)


def _shrink(widths: list[int], shrinks: list[bool], room: int) -> None:
    """Narrow the widest shrinkable column, one cell at a time, until all fit ``room``."""
    while sum(widths) > room:
        candidates = [i for i, s in enumerate(shrinks) if s and widths[i] > _NARROWEST]
        if not candidates:
            return  # a very narrow terminal: rich cuts what it must
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1


# ------------------------------------------------------------------- summaries


def summary(kind: str, shown: int, total: int, capped: bool) -> str:
    """``1,000 of 12,345 detections (use --limit to see more)``."""
    noun = kind if total != 1 else kind.rstrip("s")
    if not total:
        return f"no {kind} match"
    if shown >= total and not capped:
        return f"{total:,} {noun}"
    of = f"at least {total:,}" if capped else f"{total:,}"
    return f"{shown:,} of {of} {kind} (use --limit to see more)"


def models_line(rows: Sequence[Any]) -> str | None:
    """``model selector@1``, when every row comes from that one model."""
    models = {model_of(r) for r in rows}
    return f"model {models.pop()}" if len(models) == 1 else None


# ------------------------------------------------------------- csv and json

Format = Literal["table", "csv", "json"]


def detection_record(row: DetectionRow) -> dict[str, Any]:
    """A detection as a flat record, its time in ISO 8601 UTC (keys as ``_HEADERS``)."""
    return {"time": row.time.astimezone(UTC).isoformat(), "source": row.source,
            "channel": row.channel, "label": row.label, "confidence": row.confidence,
            "model_id": row.model_id, "model_version": row.model_version}


def event_record(row: EventRow) -> dict[str, Any]:
    """An event as a flat record, its times in ISO 8601 UTC (keys as ``_HEADERS``)."""
    return {"start": row.start.astimezone(UTC).isoformat(),
            "end": row.end.astimezone(UTC).isoformat(), "source": row.source,
            "channel": row.channel, "label": row.label, "windows": row.windows,
            "peak_confidence": row.peak_confidence, "mean_confidence": row.mean_confidence,
            "model_id": row.model_id, "model_version": row.model_version}


def write_records(form: Format, kind: str, rows: Sequence[Any], stream: IO[str]) -> None:
    """CSV with a header row (an absent value is an empty field), or one JSON array."""
    to_record = event_record if kind == "events" else detection_record
    records = [to_record(r) for r in rows]
    if form == "json":
        json.dump(records, stream, indent=2)
        stream.write("\n")
        return
    writer = csv.DictWriter(stream, fieldnames=_HEADERS[kind], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)


_HEADERS = {
    "detections": ["time", "source", "channel", "label", "confidence", "model_id",
                   "model_version"],
    "events": ["start", "end", "source", "channel", "label", "windows", "peak_confidence",
               "mean_confidence", "model_id", "model_version"],
}
