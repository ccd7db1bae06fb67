-- cortexd's own tables. LangGraph's checkpointer creates and owns `checkpoints` and `writes`.
CREATE TABLE graphs (
    project_id TEXT NOT NULL,
    id         TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- Every version ever saved, also of deleted graphs: runs execute the version they were made with.
CREATE TABLE graph_versions (
    project_id TEXT NOT NULL,
    graph_id   TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (project_id, graph_id, version)
);

CREATE TABLE runs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order: the queue's FIFO order
    id          TEXT NOT NULL UNIQUE,
    project_id  TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX runs_by_project ON runs (project_id, workflow_id, seq);
CREATE INDEX runs_by_status ON runs (status, seq);

CREATE TABLE node_states (
    run_id  TEXT NOT NULL,
    node_id TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id)
);

-- AUTOINCREMENT: a seq is never reused, also after pruning; rolled-back inserts leave no gap.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    run_id     TEXT,
    type       TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX events_by_project ON events (project_id, seq);
CREATE INDEX events_by_run ON events (run_id, seq);
