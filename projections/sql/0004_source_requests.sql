-- Desired state of sources (SourceAdded / SourceRemoved) next to their actual state.
ALTER TABLE sources DROP CONSTRAINT sources_state_check;
ALTER TABLE sources ADD CONSTRAINT sources_state_check
    CHECK (state IN ('requested', 'loaded', 'failed', 'unloaded', 'removed'));
ALTER TABLE sources ADD COLUMN database text;     -- archive folder, if any
ALTER TABLE sources ADD COLUMN start_date timestamptz; -- archive playback start, if any
ALTER TABLE sources ADD COLUMN format text;       -- ogg | copy
ALTER TABLE sources ADD COLUMN wanted boolean NOT NULL DEFAULT true; -- false once removed
