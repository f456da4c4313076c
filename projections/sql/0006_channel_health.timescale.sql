-- Channel health on TimescaleDB: a hypertable (1-day chunks), compressed after two
-- days, kept 90 days like the EVENTS stream. Columns as 0006_channel_health.plain.sql.

CREATE TABLE channel_health (
    time             timestamptz NOT NULL,
    end_time         timestamptz NOT NULL,
    source           text NOT NULL,
    channel          integer NOT NULL,
    rms_dbfs         real NOT NULL,
    peak_dbfs        real NOT NULL,
    clip_ratio       real NOT NULL,
    noise_floor_dbfs real,
    dc_offset        real,
    hum_db           real,
    hum_hz           smallint,
    dead             boolean NOT NULL,
    CONSTRAINT channel_health_key UNIQUE (source, channel, time)
);
SELECT create_hypertable('channel_health', 'time', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE channel_health SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'source, channel',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('channel_health', INTERVAL '2 days');
SELECT add_retention_policy('channel_health', INTERVAL '90 days');
