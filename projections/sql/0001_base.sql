-- Small tables, the same on plain PostgreSQL and on TimescaleDB.

CREATE TABLE sources (
    name        text PRIMARY KEY,
    kind        text,                 -- file | url | jack | live | archive
    location    text,                 -- path, URL, JACK port pattern, live client
    channels    integer[],
    sample_rate integer,
    permanent   boolean NOT NULL DEFAULT false,
    state       text NOT NULL CHECK (state IN ('loaded', 'failed', 'unloaded')),
    since       timestamptz NOT NULL, -- when it entered its current state
    last_error  text,
    attempts    integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL  -- time of the last event about it (event time)
);

CREATE TABLE models (
    model_id       text NOT NULL,
    version        text NOT NULL,
    labels         text[] NOT NULL,   -- the order of predictions.scores
    feature_params jsonb,             -- NULL until a ModelDeployed is projected
    path           text,
    deployed_at    timestamptz,
    PRIMARY KEY (model_id, version)
);

CREATE TABLE projection_checkpoints (
    projection text NOT NULL,
    stream     text NOT NULL,
    last_seq   bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    tables     text[] NOT NULL DEFAULT '{}', -- what a rebuild of this projection truncates
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);

-- A checkpoint never moves backwards, whoever writes it (a rebuild deletes the row).
CREATE FUNCTION projection_checkpoints_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.last_seq < OLD.last_seq THEN
        RAISE EXCEPTION 'checkpoint of %/% cannot move backwards (% -> %)',
            OLD.projection, OLD.stream, OLD.last_seq, NEW.last_seq
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER projection_checkpoints_forward
    BEFORE UPDATE ON projection_checkpoints
    FOR EACH ROW EXECUTE FUNCTION projection_checkpoints_forward();
