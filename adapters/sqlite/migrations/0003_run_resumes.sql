-- The answer to a run waiting for input (`resume {"value": ...}`, as JSON), kept from the
-- resume's acknowledgement until LangGraph has it in the run's checkpoints. `checkpoint_id` is
-- the run thread's newest checkpoint when the answer was given: once the thread is past it, the
-- answer is in LangGraph's checkpoints and this row is stale.
CREATE TABLE run_resumes (
    run_id        TEXT PRIMARY KEY,
    checkpoint_id TEXT,
    value         TEXT NOT NULL
);
