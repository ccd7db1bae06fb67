-- Waiting without a slot (DESIGN §11). `wake_at`: a parked run's wake-up time, in seconds since
-- 1970 by the database's clock (a timer's end; 1e18 while it waits only for a child, whose end
-- sets it to 0); NULL for every run not parked. Parked runs are `running` without an owner:
-- the index of runs taken back for the queue leaves them out, and they get their own.
ALTER TABLE runs ADD COLUMN wake_at REAL;
DROP INDEX runs_unowned;
CREATE INDEX runs_unowned ON runs (queued_at) WHERE status = 'running' AND owner IS NULL AND wake_at IS NULL;
CREATE INDEX runs_waking ON runs (wake_at) WHERE wake_at IS NOT NULL;

-- Sub-workflows: a child run's parent, for `?parent_run_id=` and for commands that reach the
-- children of a run (cancel, pause, resume).
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
CREATE INDEX runs_page_parent ON runs (project_id, parent_run_id, created_us, seq);
CREATE INDEX runs_children ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
