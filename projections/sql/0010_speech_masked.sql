-- Privacy (TIDZAM_PRIVACY=mask): every window silenced as speech is a 'masked' row of
-- mixer_log (from_time: the window's start). mixer_state counts them per channel.

CREATE OR REPLACE VIEW mixer_state AS
WITH applied AS (
    SELECT DISTINCT ON (source, channel) source, channel, gain_db, muted, origin, reason, by,
           from_time
      FROM mixer_log WHERE kind = 'applied'
     ORDER BY source, channel, from_time DESC, at DESC
), manual AS (
    SELECT DISTINCT ON (source, channel) source, channel, action
      FROM mixer_log WHERE kind = 'command' AND origin = 'manual'
     ORDER BY source, channel, at DESC
), asked AS (
    SELECT DISTINCT ON (source, channel) source, channel, action, gain_db, origin, reason, by,
           at
      FROM mixer_log WHERE kind = 'command'
     ORDER BY source, channel, at DESC
), masked AS (
    SELECT source, channel, count(*) AS masked, max(from_time) AS last_masked
      FROM mixer_log WHERE kind = 'masked'
     GROUP BY source, channel
)
SELECT k.source, k.channel,
       COALESCE(a.gain_db, 0) AS gain_db, COALESCE(a.muted, false) AS muted,
       a.origin, a.reason, a.by, a.from_time,
       COALESCE(m.action <> 'auto', false) AS pinned,
       c.action AS last_action, c.origin AS last_origin, c.reason AS last_reason,
       c.by AS last_by, c.at AS last_at,
       COALESCE(s.masked, 0) AS masked, s.last_masked
  FROM (SELECT DISTINCT source, channel FROM mixer_log) k
  LEFT JOIN applied a USING (source, channel)
  LEFT JOIN manual m USING (source, channel)
  LEFT JOIN asked c USING (source, channel)
  LEFT JOIN masked s USING (source, channel);

CREATE INDEX mixer_log_kind ON mixer_log (kind, source, channel);
