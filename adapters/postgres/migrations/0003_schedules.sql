-- Schedules (DESIGN §10), as SQLite's 0006_schedules.sql. (0002 is left to the run list
-- indexes of another branch.)
CREATE TABLE schedules (
    project_id  TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    workflow_id TEXT COLLATE "C" NOT NULL,
    body        TEXT NOT NULL,
    next_run_at DOUBLE PRECISION,
    last_run_at DOUBLE PRECISION,
    PRIMARY KEY (project_id, id)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;

-- The primary key makes a scheduled time fire at most once per database.
CREATE TABLE schedule_firings (
    project_id    TEXT COLLATE "C" NOT NULL,
    schedule_id   TEXT COLLATE "C" NOT NULL,
    scheduled_for TEXT COLLATE "C" NOT NULL,
    run_id        TEXT NOT NULL,
    PRIMARY KEY (project_id, schedule_id, scheduled_for)
);

ALTER TABLE runs ADD COLUMN trigger_type TEXT NOT NULL DEFAULT 'api';
