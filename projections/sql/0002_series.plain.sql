-- Time series on plain PostgreSQL 15+: monthly RANGE partitions on time (UTC months),
-- created on demand by tidzam_ensure_month_partition(); a DEFAULT partition takes
-- whatever arrives before its month exists, so no row is ever rejected.
-- Unique keys include the partition key (time), as PostgreSQL requires.

CREATE TABLE detections (
    time          timestamptz NOT NULL, -- window start, from the audio's clock
    source        text NOT NULL,
    channel       integer NOT NULL,
    label         text NOT NULL,
    confidence    real,                 -- the label's score; NULL if not in the vector
    model_id      text NOT NULL,
    model_version text NOT NULL,
    window_end    timestamptz NOT NULL,
    CONSTRAINT detections_key UNIQUE (model_id, model_version, source, channel, time, label)
) PARTITION BY RANGE (time);
CREATE TABLE detections_default PARTITION OF detections DEFAULT;
CREATE INDEX detections_time_brin ON detections USING brin (time);
CREATE INDEX detections_source_channel_time ON detections (source, channel, time);
CREATE INDEX detections_label_time ON detections (label, time);

CREATE TABLE predictions (
    time          timestamptz NOT NULL,
    end_time      timestamptz NOT NULL,
    source        text NOT NULL,
    channel       integer NOT NULL,
    model_id      text NOT NULL,
    model_version text NOT NULL,
    scores        real[] NOT NULL,      -- every class, in models.labels order
    result        text[] NOT NULL,
    projected_at  timestamptz NOT NULL DEFAULT clock_timestamp(), -- when the row was written
    CONSTRAINT predictions_key UNIQUE (model_id, model_version, source, channel, time)
) PARTITION BY RANGE (time);
CREATE TABLE predictions_default PARTITION OF predictions DEFAULT;
CREATE INDEX predictions_time_brin ON predictions USING brin (time);
CREATE INDEX predictions_source_channel_time ON predictions (source, channel, time);

-- The partition of `parent` holding `at` (its UTC month); returns its name, or NULL
-- when rows of that month already sit in the DEFAULT partition (they stay there:
-- creating the partition would fail).
CREATE FUNCTION tidzam_ensure_month_partition(parent regclass, at timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo_utc  timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    hi_utc  timestamp := lo_utc + interval '1 month';
    nsp     text;
    base    text;
    part    text;
    crowded boolean;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, base
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    part := base || '_' || to_char(lo_utc, 'YYYYMM');
    -- concurrent writers would race on CREATE TABLE: one at a time per partition
    PERFORM pg_advisory_xact_lock(hashtext('tidzam.partition.' || nsp || '.' || part));
    IF to_regclass(format('%I.%I', nsp, part)) IS NOT NULL THEN
        RETURN part;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE time >= $1 AND time < $2)',
                   nsp, base || '_default')
       INTO crowded USING lo_utc AT TIME ZONE 'UTC', hi_utc AT TIME ZONE 'UTC';
    IF crowded THEN
        RAISE NOTICE '% has rows of %: they stay in the default partition', base, part;
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                   nsp, part, nsp, base,
                   to_char(lo_utc, 'YYYY-MM-DD HH24:MI:SS') || '+00',
                   to_char(hi_utc, 'YYYY-MM-DD HH24:MI:SS') || '+00');
    RETURN part;
END
$$;
