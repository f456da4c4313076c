-- Every detection with the health of its channel over its window: the power mean of
-- the RMS levels (level_dbfs), the loudest peak, the highest clipping ratio, the
-- power mean of the noise floors, and whether any second of it was dead. A window
-- with no health row (audio projected before health existed) has NULLs.
-- "Birds heard over a noise floor below -50 dBFS":
--   SELECT * FROM detections_with_level WHERE label = 'birds' AND noise_floor_dbfs < -50;
-- Health intervals are chunks (1 s by default, at most a minute): the index range
-- starts a minute before the window.

CREATE VIEW detections_with_level AS
SELECT d.*, lvl.level_dbfs, lvl.peak_dbfs, lvl.clip_ratio, lvl.noise_floor_dbfs, lvl.dead
  FROM detections d
  LEFT JOIN LATERAL (
      SELECT (10 * log(avg(power(10::double precision, h.rms_dbfs / 10))))::real
                 AS level_dbfs,
             max(h.peak_dbfs) AS peak_dbfs,
             max(h.clip_ratio) AS clip_ratio,
             (10 * log(avg(power(10::double precision, h.noise_floor_dbfs / 10))))::real
                 AS noise_floor_dbfs,
             bool_or(h.dead) AS dead
        FROM channel_health h
       WHERE h.source = d.source AND h.channel = d.channel
         AND h.time > d.time - INTERVAL '1 minute' AND h.time < d.window_end
         AND h.end_time > d.time
  ) lvl ON true;
