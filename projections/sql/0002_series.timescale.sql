-- Time series on TimescaleDB: hypertables (1-day chunks), compression after a few
-- days, predictions (full score vectors) dropped after 90 days like the EVENTS
-- stream, detections kept; a continuous aggregate for hourly counts.
-- Column names, keys and index names match 0002_series.plain.sql.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE detections (
    time          timestamptz NOT NULL,
    source        text NOT NULL,
    channel       integer NOT NULL,
    label         text NOT NULL,
    confidence    real,
    model_id      text NOT NULL,
    model_version text NOT NULL,
    window_end    timestamptz NOT NULL,
    CONSTRAINT detections_key UNIQUE (model_id, model_version, source, channel, time, label)
);
SELECT create_hypertable('detections', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX detections_source_channel_time ON detections (source, channel, time);
CREATE INDEX detections_label_time ON detections (label, time);

CREATE TABLE predictions (
    time          timestamptz NOT NULL,
    end_time      timestamptz NOT NULL,
    source        text NOT NULL,
    channel       integer NOT NULL,
    model_id      text NOT NULL,
    model_version text NOT NULL,
    scores        real[] NOT NULL,
    result        text[] NOT NULL,
    projected_at  timestamptz NOT NULL DEFAULT clock_timestamp(), -- when the row was written
    CONSTRAINT predictions_key UNIQUE (model_id, model_version, source, channel, time)
);
SELECT create_hypertable('predictions', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX predictions_source_channel_time ON predictions (source, channel, time);

ALTER TABLE detections SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'source, channel',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('detections', INTERVAL '7 days');
ALTER TABLE predictions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'source, channel',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('predictions', INTERVAL '2 days');
SELECT add_retention_policy('predictions', INTERVAL '90 days');

CREATE MATERIALIZED VIEW detections_hourly_cagg WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, label, source,
       count(*) AS count, avg(confidence) AS avg_confidence
  FROM detections
 GROUP BY bucket, label, source
  WITH NO DATA;
SELECT add_continuous_aggregate_policy('detections_hourly_cagg',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');

-- Hypertables create their chunks themselves: the same function as on plain
-- PostgreSQL, doing nothing, keeps the writers identical.
CREATE FUNCTION tidzam_ensure_month_partition(parent regclass, at timestamptz)
RETURNS text
LANGUAGE sql AS $$ SELECT NULL::text $$;
