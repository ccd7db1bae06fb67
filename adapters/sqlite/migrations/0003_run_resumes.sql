-- The answer to a run waiting for input (`resume {"value": ...}`, as JSON), kept from the
-- resume's acknowledgement until LangGraph has it in the run's checkpoints. `interrupt_id` is
-- the question it answers (LangGraph's interrupt id; NULL when several were asked at once):
-- once that question is no longer asked, the answer is in LangGraph's checkpoints and this row
-- is stale. `checkpoint_id`, the thread's newest checkpoint when the answer was given, decides
-- that when there is no interrupt id.
CREATE TABLE run_resumes (
    run_id        TEXT PRIMARY KEY,
    checkpoint_id TEXT,
    interrupt_id  TEXT,
    value         TEXT NOT NULL
);
