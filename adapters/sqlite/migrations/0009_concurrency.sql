-- Per-graph concurrency (DESIGN §11). A run's group is fixed when it is created, from the graph
-- version it pins: `concurrency_key` names the group (project, graph and the key's value, as
-- canonical JSON, or its digest), NULL when that version sets no concurrency;
-- `concurrency_limit` is that version's limit. `concurrency_held` = 1: a pending run its group
-- has no room for; claims do not look at it until a run of its group leaves `running` (or a
-- waiting one of it leaves the queue) and lets it go, oldest first. Runs stored before have no
-- group.
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
ALTER TABLE runs ADD COLUMN concurrency_limit INTEGER;
ALTER TABLE runs ADD COLUMN concurrency_held INTEGER NOT NULL DEFAULT 0;
-- What a claim reads: the queue without the held runs (FIFO). It replaces runs_pending, which
-- nothing reads any more (so a pending run costs no more index writes than before).
CREATE INDEX runs_claimable ON runs (queued_at) WHERE status = 'pending' AND concurrency_held = 0;
DROP INDEX runs_pending;
-- A group's running runs (counted at a claim) and its waiting ones, held or not, FIFO.
CREATE INDEX runs_group_running ON runs (concurrency_key)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
CREATE INDEX runs_group_pending ON runs (concurrency_key, concurrency_held, queued_at)
    WHERE status = 'pending' AND concurrency_key IS NOT NULL;
-- The concurrency of each graph version (its body's `concurrency`, as JSON), read when a run
-- of it is created; NULL for none, and for the versions saved before.
ALTER TABLE graph_versions ADD COLUMN concurrency TEXT;
