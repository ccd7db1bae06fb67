-- Schedules (DESIGN §10). `body` is the schedule as the API shows it, but for its times:
-- `next_run_at` and `last_run_at` are columns, in seconds since 1970 (UTC), NULL when none.
-- (0005 is left to the run list indexes of another branch.)
CREATE TABLE schedules (
    project_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    body        TEXT NOT NULL,
    next_run_at REAL,
    last_run_at REAL,
    PRIMARY KEY (project_id, id)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;

-- One row per scheduled time fired, written in the transaction that creates its run: the
-- primary key is what makes a scheduled time fire at most once per database.
CREATE TABLE schedule_firings (
    project_id    TEXT NOT NULL,
    schedule_id   TEXT NOT NULL,
    scheduled_for TEXT NOT NULL,  -- UTC, '2026-01-01T09:00:00Z'
    run_id        TEXT NOT NULL,
    PRIMARY KEY (project_id, schedule_id, scheduled_for)
);

-- What started a run (its body's `trigger.type`): 'api', 'schedule', 'webhook'.
ALTER TABLE runs ADD COLUMN trigger_type TEXT NOT NULL DEFAULT 'api';
