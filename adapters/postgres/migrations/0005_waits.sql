-- Waiting without a slot, and sub-workflows (DESIGN §11), as SQLite's 0008_waits.sql.
ALTER TABLE runs ADD COLUMN wake_at DOUBLE PRECISION;
DROP INDEX runs_unowned;
CREATE INDEX runs_unowned ON runs (queued_at) WHERE status = 'running' AND owner IS NULL AND wake_at IS NULL;
CREATE INDEX runs_waking ON runs (wake_at) WHERE wake_at IS NOT NULL;

ALTER TABLE runs ADD COLUMN parent_run_id TEXT COLLATE "C";
CREATE INDEX runs_page_parent ON runs (project_id, parent_run_id, created_us, seq);
CREATE INDEX runs_children ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
