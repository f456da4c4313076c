-- Detection events: the windows of one (model, source, channel) with one decided
-- label, merged while they follow each other. A window joins an event when it starts
-- at most one window length after the event's last window ends: each window reaches
-- to [start, end + (end - start)] and an event is a connected run of reaches
-- (projections/events.py keeps it up to date batch by batch; the same rule below
-- builds it from the detections already stored).
--
-- A plain table on both flavours: it holds one row per event, far fewer than
-- detections, and merging moves start and end times, which a hypertable or a
-- time-partitioned table would have to move between chunks.

CREATE TABLE detection_events (
    model_id         text NOT NULL,
    model_version    text NOT NULL,
    source           text NOT NULL,
    channel          integer NOT NULL,
    label            text NOT NULL,
    start_time       timestamptz NOT NULL, -- the first window's start
    end_time         timestamptz NOT NULL, -- the last window's end
    reach            timestamptz NOT NULL, -- a window starting up to here joins the event
    windows          integer NOT NULL CHECK (windows > 0),
    peak_confidence  real,                 -- NULL if no window had a confidence
    confidence_sum   numeric,              -- exact: the merge order cannot change the mean
    confidence_count integer NOT NULL,     -- the windows that had a confidence
    mean_confidence  real GENERATED ALWAYS AS
                         ((confidence_sum / NULLIF(confidence_count, 0))::real) STORED,
    -- the events of a key never touch, so their reaches differ; the merge looks up by it
    CONSTRAINT detection_events_key UNIQUE (model_id, model_version, source, channel, label, reach)
);
CREATE INDEX detection_events_source_channel_start ON detection_events (source, channel, start_time);
CREATE INDEX detection_events_label_start ON detection_events (label, start_time);
CREATE INDEX detection_events_end ON detection_events (end_time);

-- The detections stored before this migration (gaps and islands: a window starts a
-- new event when it starts after every earlier window's reach).
INSERT INTO detection_events (model_id, model_version, source, channel, label, start_time,
                              end_time, reach, windows, peak_confidence, confidence_sum,
                              confidence_count)
SELECT model_id, model_version, source, channel, label, min(time), max(window_end),
       max(reach), count(*), max(confidence), sum(confidence::numeric), count(confidence)
  FROM (SELECT *, sum(starts) OVER (PARTITION BY model_id, model_version, source, channel, label
                                    ORDER BY time, reach ROWS UNBOUNDED PRECEDING) AS event
          FROM (SELECT *, CASE WHEN time <= max(reach) OVER (
                                   PARTITION BY model_id, model_version, source, channel, label
                                   ORDER BY time, reach
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                               THEN 0 ELSE 1 END AS starts
                  FROM (SELECT *, window_end + (window_end - time) AS reach
                          FROM detections) reaching) marked) numbered
 GROUP BY model_id, model_version, source, channel, label, event;
