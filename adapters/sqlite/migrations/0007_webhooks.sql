-- Inbound webhooks and idempotent starts (DESIGN §10), and the run list's trigger filter.

-- A hook's id is global: `POST /api/hooks/{id}` names no project. `secret` is the HMAC key
-- (it must be readable to check a signature: a hash would not do); `body` is the hook as the
-- API shows it, without the secret.
CREATE TABLE webhooks (
    id          TEXT NOT NULL PRIMARY KEY,
    project_id  TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    secret      TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX webhooks_by_project ON webhooks (project_id, id);

-- One row per Idempotency-Key, written in the transaction that creates its run: the primary
-- key makes a key start one run per project. `fingerprint`: what the request asked for;
-- `expires_us`: the run's creation plus `[runs] idempotency_ttl_s`, in microseconds since 1970.
CREATE TABLE idempotency_keys (
    project_id  TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    expires_us  INTEGER NOT NULL,
    PRIMARY KEY (project_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_us);

-- `?trigger=`, alone or with the graph (with a status, the status's index is read).
CREATE INDEX runs_page_trigger ON runs (project_id, trigger_type, created_us, seq);
CREATE INDEX runs_page_graph_trigger ON runs (project_id, workflow_id, trigger_type, created_us, seq);
