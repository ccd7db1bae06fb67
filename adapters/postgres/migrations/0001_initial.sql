-- cortexd on PostgreSQL: the same tables as on SQLite (its migrations 0001-0004), and
-- LangGraph's checkpoint tables in the schema of its SQLite saver, which cortexd's own saver
-- (adapters/sql/checkpoints.py) writes and reads on both databases. Text keys that are sorted
-- compare byte by byte (COLLATE "C"), as SQLite's do: checkpoint ids sort by time that way.

CREATE TABLE graphs (
    project_id TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- Every version ever saved, also of deleted graphs: runs execute the version they were made with.
CREATE TABLE graph_versions (
    project_id TEXT COLLATE "C" NOT NULL,
    graph_id   TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (project_id, graph_id, version)
);

-- `owner` is the executing daemon's instance id; `epoch` moves on at every claim, recovery,
-- cancel and release, and every write of an execution checks it (fencing);
-- `lease_expires_at` is in seconds since 1970 by the database server's clock; `queued_at` is
-- the seq of the event that put the run in the queue (first in, first out).
CREATE TABLE runs (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order
    id               TEXT COLLATE "C" NOT NULL UNIQUE,
    project_id       TEXT COLLATE "C" NOT NULL,
    workflow_id      TEXT COLLATE "C" NOT NULL,
    status           TEXT NOT NULL,
    body             TEXT NOT NULL,
    owner            TEXT,
    epoch            BIGINT NOT NULL DEFAULT 0,
    lease_expires_at DOUBLE PRECISION,
    recoveries       INTEGER NOT NULL DEFAULT 0,
    queued_at        BIGINT
);
CREATE INDEX runs_by_project ON runs (project_id, workflow_id, seq);
CREATE INDEX runs_by_status ON runs (status, seq);
CREATE INDEX runs_pending ON runs (queued_at) WHERE status = 'pending';
CREATE INDEX runs_unowned ON runs (queued_at) WHERE status = 'running' AND owner IS NULL;
CREATE INDEX runs_owned ON runs (owner, lease_expires_at) WHERE owner IS NOT NULL;

-- `position`: the order the nodes were first recorded in (SQLite's rowid).
CREATE TABLE node_states (
    run_id   TEXT COLLATE "C" NOT NULL,
    node_id  TEXT COLLATE "C" NOT NULL,
    body     TEXT NOT NULL,
    position BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, node_id)
);

-- The event log. `seq` is not a sequence (those are neither gap-free nor in commit order):
-- every write transaction locks `event_head` first and gives its events the numbers after it,
-- so seqs are gap-free and in commit order (adapters/postgres/writer.py).
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    run_id     TEXT COLLATE "C",
    type       TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX events_by_project ON events (project_id, seq);
CREATE INDEX events_by_run ON events (run_id, seq);

CREATE TABLE event_head (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq BIGINT NOT NULL
);
INSERT INTO event_head (one, seq) VALUES (TRUE, 0);

-- A small persistent key/value space per plugin.
CREATE TABLE plugin_state (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (plugin, key)
);

-- The answer to a run waiting for input, kept from the resume's acknowledgement until
-- LangGraph has it in the run's checkpoints (see SQLite's 0003_run_resumes.sql).
CREATE TABLE run_resumes (
    run_id        TEXT PRIMARY KEY,
    checkpoint_id TEXT,
    interrupt_id  TEXT,
    value         TEXT NOT NULL
);

-- Duties done once per database (sinks, housekeeping): held under a lease like a run.
CREATE TABLE singletons (
    name             TEXT PRIMARY KEY,
    owner            TEXT,
    epoch            BIGINT NOT NULL DEFAULT 0,
    lease_expires_at DOUBLE PRECISION
);

-- The daemons serving this database now.
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
    seq  BIGINT NOT NULL
);

-- LangGraph's checkpoints, as its SQLite saver lays them out.
CREATE TABLE checkpoints (
    thread_id            TEXT COLLATE "C" NOT NULL,
    checkpoint_ns        TEXT COLLATE "C" NOT NULL DEFAULT '',
    checkpoint_id        TEXT COLLATE "C" NOT NULL,
    parent_checkpoint_id TEXT COLLATE "C",
    type                 TEXT,
    checkpoint           BYTEA,
    metadata             BYTEA,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE TABLE writes (
    thread_id     TEXT COLLATE "C" NOT NULL,
    checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
    checkpoint_id TEXT COLLATE "C" NOT NULL,
    task_id       TEXT COLLATE "C" NOT NULL,
    task_path     TEXT COLLATE "C" NOT NULL DEFAULT '',
    idx           INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    type          TEXT,
    value         BYTEA,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
