-- Views that read the same on plain PostgreSQL and on TimescaleDB.
-- Buckets are UTC hours (origin written with +00 so the migrating session's time
-- zone is not baked into the view).

CREATE VIEW detections_hourly AS
SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       label, source,
       count(*) AS count,
       avg(confidence)::real AS avg_confidence
  FROM detections
 GROUP BY 1, 2, 3;

CREATE VIEW detections_per_channel AS
SELECT source, channel, label,
       count(*) AS count,
       min(time) AS first_seen,
       max(time) AS last_seen
  FROM detections
 GROUP BY source, channel, label;

-- The last detection of every (source, channel). A loose index scan (recursive
-- CTE over the (source, channel, time) index) finds the pairs without reading
-- every row, so it stays fast on billions of detections.
CREATE VIEW latest_detections AS
WITH RECURSIVE pairs AS (
    (SELECT source, channel FROM detections ORDER BY source, channel LIMIT 1)
    UNION ALL
    SELECT nxt.source, nxt.channel
      FROM pairs p
      CROSS JOIN LATERAL (
          SELECT d.source, d.channel FROM detections d
           WHERE (d.source, d.channel) > (p.source, p.channel)
           ORDER BY d.source, d.channel LIMIT 1
      ) nxt
)
SELECT newest.*
  FROM pairs p
  CROSS JOIN LATERAL (
      SELECT d.source, d.channel, d.time, d.label, d.confidence, d.model_id, d.model_version
        FROM detections d
       WHERE d.source = p.source AND d.channel = p.channel
       ORDER BY d.time DESC, d.label
       LIMIT 1
  ) newest;
