-- Several daemons on one file (DESIGN §8): who executes a run is recorded here, not in a
-- daemon's memory. `owner` is the executing daemon's instance id; `epoch` moves on at every
-- claim, recovery, cancel and release, and every write of an execution checks it (fencing);
-- `lease_expires_at` is in seconds since the epoch by the database's clock (SQLite: the host's).
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_expires_at REAL;
ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
-- The queue's order: the seq of the event that put the run in the queue (created, executed
-- again, resumed). Runs queued before this migration keep their creation order.
ALTER TABLE runs ADD COLUMN queued_at INTEGER;
UPDATE runs SET queued_at = seq;
CREATE INDEX runs_pending ON runs (queued_at) WHERE status = 'pending';
CREATE INDEX runs_unowned ON runs (queued_at) WHERE status = 'running' AND owner IS NULL;
CREATE INDEX runs_owned ON runs (owner, lease_expires_at) WHERE owner IS NOT NULL;

-- Duties done once per database (sinks, housekeeping): held under a lease like a run.
CREATE TABLE singletons (
    name             TEXT PRIMARY KEY,
    owner            TEXT,
    epoch            INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL
);

-- The daemons serving this file now: what they are, and where to wake them (a datagram).
CREATE TABLE instances (
    id         TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    wake       TEXT
);

-- Where each event sink is in the event log (delivered up to and including `seq`).
CREATE TABLE sink_cursors (
    sink TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
-- The webhook sink kept its cursor in its plugin state; it is delivered by cortexd now.
INSERT INTO sink_cursors (sink, seq)
    SELECT 'plugins.webhook', CAST(value AS INTEGER) FROM plugin_state
    WHERE plugin = 'webhook' AND key = 'cursor';
