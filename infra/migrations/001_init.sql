-- Every write carries an idempotency key (unique), so an activity retried after a timeout or a
-- worker crash never writes a row twice: inserts are ON CONFLICT (idempotency_key) DO NOTHING.

CREATE TABLE IF NOT EXISTS cases (
    loan_id          text PRIMARY KEY,
    workflow_id      text NOT NULL,
    borrower_key     text NOT NULL,
    policy_name      text NOT NULL,
    policy_version   text NOT NULL,
    segment          text NOT NULL,
    rule_pack        text NOT NULL,
    currency         char(3) NOT NULL,
    amount_placed    numeric(18, 2) NOT NULL,
    outstanding      numeric(18, 2) NOT NULL,
    paid_total       numeric(18, 2) NOT NULL DEFAULT 0,
    stage            text NOT NULL,
    state            text NOT NULL,
    days_past_due    integer NOT NULL DEFAULT 0,
    assigned_agent   text,
    due_date         date NOT NULL,
    opened_at        timestamptz NOT NULL,
    closed_at        timestamptz,
    close_reason     text,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_stage_state_outstanding ON cases (stage, state, outstanding);
CREATE INDEX IF NOT EXISTS cases_policy ON cases (policy_name, policy_version, segment);
CREATE INDEX IF NOT EXISTS cases_borrower ON cases (borrower_key);

-- One row per contact decision: sent, deferred, skipped, failed, with the rule that applied.
CREATE TABLE IF NOT EXISTS contacts (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    loan_id          text NOT NULL,
    borrower_key     text NOT NULL,
    contact_key      text NOT NULL,
    channel          text NOT NULL,
    step_id          text NOT NULL,
    stage            text NOT NULL,
    template         text,
    decision         text NOT NULL,
    rule             text,
    reason           text,
    provider_id      text,
    outcome          text,
    occurred_at      timestamptz NOT NULL,
    local_date       date
);
CREATE INDEX IF NOT EXISTS contacts_loan ON contacts (loan_id, occurred_at);
CREATE INDEX IF NOT EXISTS contacts_borrower ON contacts (borrower_key, channel, occurred_at);
CREATE INDEX IF NOT EXISTS contacts_contact ON contacts (contact_key, channel, occurred_at);

-- Work queue for agent consoles and dialers: calls and field visits.
CREATE TABLE IF NOT EXISTS tasks (
    id               bigserial PRIMARY KEY,
    task_key         text NOT NULL UNIQUE,
    loan_id          text NOT NULL,
    workflow_id      text NOT NULL,
    kind             text NOT NULL,
    step_id          text NOT NULL,
    priority         integer NOT NULL,
    due_by           timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'open',
    outcome          text,
    agent            text,
    note             text,
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (status, kind, priority DESC, due_by);

-- Domain events with who did it and when: payments, promises, plans, waivers, holds, outcomes.
CREATE TABLE IF NOT EXISTS events (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    loan_id          text NOT NULL,
    kind             text NOT NULL,
    actor            text,
    summary          text NOT NULL,
    rule             text,
    detail           jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS events_loan ON events (loan_id, occurred_at, id);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, occurred_at);

CREATE TABLE IF NOT EXISTS payments (
    id               bigserial PRIMARY KEY,
    loan_id          text NOT NULL,
    payment_id       text NOT NULL,
    amount           numeric(18, 2) NOT NULL,
    currency         char(3) NOT NULL,
    paid_at          timestamptz NOT NULL,
    allocation       jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (loan_id, payment_id)
);

CREATE TABLE IF NOT EXISTS legal_actions (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    loan_id          text NOT NULL,
    action           text NOT NULL,
    documents        jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS legal_actions_loan ON legal_actions (loan_id, created_at);

-- Outbound messages: claimed before the provider is called, so a retry finds the claim and
-- reconciles with the provider instead of sending again.
CREATE TABLE IF NOT EXISTS outbox (
    outbox_key       text PRIMARY KEY,
    channel          text NOT NULL,
    status           text NOT NULL,
    provider_id      text,
    body_sha256      text NOT NULL,
    claimed_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    error            text
);

-- Stage transitions, for roll rates.
CREATE TABLE IF NOT EXISTS stage_history (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    loan_id          text NOT NULL,
    from_stage       text,
    to_stage         text NOT NULL,
    occurred_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_history_loan ON stage_history (loan_id, occurred_at);
