-- Pages of runs (DESIGN §12): newest first by creation time, the creation order (seq) among
-- equal times, read a page at a time from an index whatever the number of runs stored (keyset
-- pagination). `created_us`: the run's `created_at` in microseconds since 1970 (UTC), set once
-- when the run is stored; older runs get theirs from their body (cortexd writes `created_at`
-- with six fractional digits or none, and a zone).
ALTER TABLE runs ADD COLUMN created_us INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET created_us =
    unixepoch(json_extract(body, '$.created_at')) * 1000000
    + CASE WHEN substr(json_extract(body, '$.created_at'), 20, 1) = '.'
           THEN CAST(substr(json_extract(body, '$.created_at'), 21, 6) AS INTEGER) ELSE 0 END;
-- One index per combination of the filters that are equalities, each ending in the order of
-- the list, so that every page is one range of one index (a list of statuses: one range per
-- status, merged). The first one replaces runs_by_project (project, graph, seq).
CREATE INDEX runs_page ON runs (project_id, created_us, seq);
CREATE INDEX runs_page_graph ON runs (project_id, workflow_id, created_us, seq);
CREATE INDEX runs_page_status ON runs (project_id, status, created_us, seq);
CREATE INDEX runs_page_graph_status ON runs (project_id, workflow_id, status, created_us, seq);
DROP INDEX runs_by_project;
