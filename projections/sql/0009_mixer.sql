-- The mixer's history: every command (a person's or the gain controller's) and every
-- state a gain stage applied, from which audio time on.

CREATE TABLE mixer_log (
    id         text PRIMARY KEY,          -- the event's message id
    kind       text NOT NULL,             -- 'command' or 'applied'
    at         timestamptz NOT NULL,      -- asked (command) or applied (stage)
    from_time  timestamptz,               -- applied: the audio time it holds from
    source     text NOT NULL,
    channel    integer NOT NULL,
    action     text,                      -- command: gain, mute, unmute, auto (release)
    gain_db    real,
    muted      boolean,
    origin     text,                      -- auto, manual (default: the initial 0 dB)
    reason     text,
    by         text,
    stage      text,
    command_id text
);
CREATE INDEX mixer_log_channel ON mixer_log (source, channel, at);

-- Each channel's mixer now: the state applied to its newest audio, whether a person
-- pinned it (their last command is not a release), and the last command, who and why.
CREATE VIEW mixer_state AS
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
)
SELECT k.source, k.channel,
       COALESCE(a.gain_db, 0) AS gain_db, COALESCE(a.muted, false) AS muted,
       a.origin, a.reason, a.by, a.from_time,
       COALESCE(m.action <> 'auto', false) AS pinned,
       c.action AS last_action, c.origin AS last_origin, c.reason AS last_reason,
       c.by AS last_by, c.at AS last_at
  FROM (SELECT DISTINCT source, channel FROM mixer_log) k
  LEFT JOIN applied a USING (source, channel)
  LEFT JOIN manual m USING (source, channel)
  LEFT JOIN asked c USING (source, channel);
