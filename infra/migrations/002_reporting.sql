-- Indexes for the operator's reads (client/operator.py): case lists, a case's history, the
-- portfolio report. Idempotent (IF NOT EXISTS), so it can be applied to a database again.

-- Lists, largest balance first: a top-N read of an index, with or without a state or agent
-- filter (stage filters use cases_stage_state_outstanding from 001).
CREATE INDEX IF NOT EXISTS cases_outstanding ON cases (outstanding DESC, loan_id);
CREATE INDEX IF NOT EXISTS cases_state_outstanding ON cases (state, outstanding DESC, loan_id);
CREATE INDEX IF NOT EXISTS cases_agent_outstanding ON cases (assigned_agent, outstanding DESC, loan_id)
    WHERE assigned_agent IS NOT NULL;

-- History: a case's tasks (events, contacts, payments, legal actions and stage changes already
-- have an index that starts with loan_id).
CREATE INDEX IF NOT EXISTS tasks_loan ON tasks (loan_id, created_at);

-- Portfolio report: index-only scans of what it aggregates (kept visible by autovacuum).
-- Stage spans: each case's stage changes in order, without a sort or a heap visit.
CREATE INDEX IF NOT EXISTS stage_history_spans ON stage_history (loan_id, occurred_at, id)
    INCLUDE (to_stage);
-- Contacts made (the only decision that counts towards contacts per cure).
CREATE INDEX IF NOT EXISTS contacts_sent_loan ON contacts (loan_id) INCLUDE (occurred_at)
    WHERE decision = 'sent';
-- Promise outcomes: a small fraction of the events.
CREATE INDEX IF NOT EXISTS events_promise_outcomes ON events (loan_id) INCLUDE (kind, occurred_at)
    WHERE kind IN ('promise_kept', 'promise_broken');
