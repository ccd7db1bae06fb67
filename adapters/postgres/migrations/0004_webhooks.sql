-- Inbound webhooks and idempotent starts (DESIGN §10), as SQLite's 0007_webhooks.sql.
CREATE TABLE webhooks (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL,
    workflow_id TEXT COLLATE "C" NOT NULL,
    secret      TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX webhooks_by_project ON webhooks (project_id, id);

CREATE TABLE idempotency_keys (
    project_id  TEXT COLLATE "C" NOT NULL,
    idem_key    TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    expires_us  BIGINT NOT NULL,
    PRIMARY KEY (project_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_us);

CREATE INDEX runs_page_trigger ON runs (project_id, trigger_type, created_us, seq);
CREATE INDEX runs_page_graph_trigger ON runs (project_id, workflow_id, trigger_type, created_us, seq);
