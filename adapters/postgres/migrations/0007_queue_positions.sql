-- Where a run joins the queue (`runs.queued_at`). The write transactions of several daemons
-- overlap on PostgreSQL, and a transaction's events are numbered only as it commits (the lock
-- on `event_head` is its last): a run's place in the queue is drawn from this sequence instead
-- of being its event's seq. A sequence is neither gap-free nor in commit order, which a queue
-- does not need: it orders runs first in, first out, each place given once. The places already
-- given (event seqs) stay below every new one. (SQLite keeps the seq: its transactions never
-- overlap.)
CREATE SEQUENCE runs_queue;
SELECT setval('runs_queue', GREATEST(
    (SELECT COALESCE(MAX(queued_at), 0) FROM runs), (SELECT seq FROM event_head), 1));
