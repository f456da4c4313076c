-- Channel health (ChannelHealth events): one row per channel and chunk (about a
-- second), measured where the audio entered, before any gain. Monthly partitions
-- as the other series (tidzam_ensure_month_partition).

CREATE TABLE channel_health (
    time             timestamptz NOT NULL, -- interval start, from the audio's clock
    end_time         timestamptz NOT NULL,
    source           text NOT NULL,
    channel          integer NOT NULL,
    rms_dbfs         real NOT NULL,
    peak_dbfs        real NOT NULL,
    clip_ratio       real NOT NULL,
    noise_floor_dbfs real,                 -- NULL: not measured (ChannelHealth v1)
    dc_offset        real,
    hum_db           real,
    hum_hz           smallint,
    dead             boolean NOT NULL,
    CONSTRAINT channel_health_key UNIQUE (source, channel, time)
) PARTITION BY RANGE (time);
CREATE TABLE channel_health_default PARTITION OF channel_health DEFAULT;
CREATE INDEX channel_health_time_brin ON channel_health USING brin (time);
