"""Detection events: runs of windows with one decided label, merged as detections arrive.

An event belongs to one key (model_id, model_version, source, channel, label). Each
window *reaches* one window length past its end, ``[start, end + (end - start)]``;
an event is a connected run of reaches. Windows on the classifier's grid overlap or
touch, so neighbours always join, and one window decided otherwise (or lost) does not
split an event. The rule depends on no arrival order: windows may come late, from two
classifier instances, or in another batch, and a replay builds the same events.

``merge_fresh`` runs inside ``ProjectionStore.apply``'s transaction, after the batch's
detections were inserted: it reads only the detections that insert created (those
copied into ``FRESH``), so a redelivered window, already stored, changes no event. A
fresh window that touches existing events replaces them by one event covering them
all: it extends an event at either end, or bridges two. Sums are ``numeric``, so the
mean does not depend on the order of the merges either.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor

FRESH = "tidzam_detections_fresh"  # the detections this transaction inserted

CREATE_FRESH = f"CREATE TEMP TABLE IF NOT EXISTS {FRESH} (LIKE detections) ON COMMIT DELETE ROWS;"

# Writers of other projections may add windows of the same keys concurrently: one
# merge at a time, so none deletes an event the other is extending.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tidzam.detection_events'))"

_KEY = "model_id, model_version, source, channel, label"
_COLS = (f"{_KEY}, start_time, end_time, reach, windows, peak_confidence, confidence_sum,"
         " confidence_count")

_SAME_KEY = ("e.model_id = f.model_id AND e.model_version = f.model_version"
             " AND e.source = f.source AND e.channel = f.channel AND e.label = f.label")


def _runs(pieces: str) -> str:
    """SQL grouping the rows of ``pieces`` (columns ``_COLS``) into runs: per key, rows
    whose reaches connect become one row (earliest start, latest end and reach, summed
    windows and confidences, highest peak). Merging is associative, so grouping in any
    order gives the same runs."""
    return f"""
SELECT {_KEY}, min(start_time) AS start_time, max(end_time) AS end_time,
       max(reach) AS reach, sum(windows)::int AS windows,
       max(peak_confidence) AS peak_confidence, sum(confidence_sum) AS confidence_sum,
       sum(confidence_count)::int AS confidence_count
  FROM (SELECT *, sum(starts) OVER (PARTITION BY {_KEY} ORDER BY start_time, reach
                                     ROWS UNBOUNDED PRECEDING) AS run
          FROM (SELECT *, CASE WHEN start_time <= max(reach) OVER (
                                        PARTITION BY {_KEY} ORDER BY start_time, reach
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                               THEN 0 ELSE 1 END AS starts
                  FROM ({pieces}) AS pieces) AS marked) AS numbered
 GROUP BY {_KEY}, run"""


# The fresh windows are first joined into runs among themselves (a batch of a replay
# holds long runs of each key), so the events are looked up once per run, not once per
# window. The events a run [start, reach] touches: those whose reach falls inside it,
# and the next one if it starts inside it. Events of a key never touch, so both their
# starts and their reaches increase together: two bounded look-ups by reach find them
# all, however long the key's history (``start_time <= reach`` alone would read it all).
_WINDOWS = f"""
SELECT {_KEY}, time AS start_time, window_end AS end_time,
       window_end + (window_end - time) AS reach, 1 AS windows,
       confidence AS peak_confidence, confidence::numeric AS confidence_sum,
       (confidence IS NOT NULL)::int AS confidence_count
  FROM {FRESH}"""

_MERGE = f"""
WITH fresh AS ({_runs(_WINDOWS)}),
touched AS (  -- the events a fresh run touches, by their row address
    DELETE FROM detection_events
     WHERE ctid = ANY(ARRAY(
           SELECT hit.ctid FROM fresh f CROSS JOIN LATERAL (
                  SELECT e.ctid FROM detection_events e
                   WHERE {_SAME_KEY} AND e.reach BETWEEN f.start_time AND f.reach
                  UNION ALL
                  SELECT nxt.ctid FROM (SELECT e.ctid, e.start_time FROM detection_events e
                                         WHERE {_SAME_KEY} AND e.reach > f.reach
                                         ORDER BY e.reach LIMIT 1) nxt
                   WHERE nxt.start_time <= f.reach) hit))
    RETURNING {_COLS}
)
INSERT INTO detection_events ({_COLS})
{_runs(f"SELECT {_COLS} FROM fresh UNION ALL SELECT {_COLS} FROM touched")}
"""


async def merge_fresh(cur: AsyncCursor[Any]) -> int:
    """Merge the fresh detections into ``detection_events``; returns the events written."""
    await cur.execute(_LOCK)
    await cur.execute(_MERGE)
    return max(cur.rowcount, 0)
