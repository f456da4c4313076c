-- Extracted samples (SampleExtracted, EVENTS) and their reviews (SampleLabelled,
-- CONTROL). The two streams are projected independently, so a review may arrive
-- before its sample: both upsert on sample_id and fill their own columns; the
-- latest review (by its time) wins.

CREATE TABLE samples (
    sample_id      text PRIMARY KEY,
    time           timestamptz,            -- the saved audio's start (context included)
    end_time       timestamptz,
    window_start   timestamptz,            -- the window the model scored
    window_end     timestamptz,
    source         text,
    channel        integer,
    label          text,                   -- proposed by the model (or 'unknown')
    confidence     real,
    model_id       text,
    model_version  text,
    labels         text[],                 -- the model's full vector
    scores         real[],
    reason         text,                   -- rate, auto, unknown, hesitant
    destination    text,
    path           text,                   -- relative to the samples folder
    sample_rate    integer,
    reviewed_label text,                   -- NULL: unchecked
    previous_label text,
    reviewed_by    text,
    reviewed_at    timestamptz
);
CREATE INDEX samples_label ON samples (destination, label);
CREATE INDEX samples_time ON samples (time);

-- The seed's `database_info`: per destination and class, how many samples and how
-- many still unchecked. A reviewed sample counts under its reviewed label.
CREATE VIEW samples_info AS
SELECT destination, COALESCE(reviewed_label, label) AS label,
       count(*) AS samples,
       count(*) FILTER (WHERE reviewed_label IS NULL) AS unchecked,
       count(*) FILTER (WHERE reviewed_label IS NOT NULL) AS reviewed
  FROM samples
 WHERE path IS NOT NULL
 GROUP BY 1, 2;
