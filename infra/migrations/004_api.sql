-- The HTTP API's own tables: its keys (digests only), the answers kept for Idempotency-Key
-- repeats, and the audit trail of every accepted write. None holds a borrower's data.

CREATE TABLE IF NOT EXISTS api_keys (
    key_sha256  text PRIMARY KEY CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    name        text NOT NULL,   -- who acts in the audit trail; an agent's name is its agent id
    role        text NOT NULL CHECK (role IN ('loan-system', 'agent', 'operator')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One row per (caller, Idempotency-Key): status is NULL while the first request is carried out.
CREATE TABLE IF NOT EXISTS api_idempotency (
    principal        text NOT NULL,
    idempotency_key  text NOT NULL,
    request_sha256   text NOT NULL,
    status           integer,
    media_type       text,
    body             text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (principal, idempotency_key)
);

CREATE TABLE IF NOT EXISTS api_audit (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    principal        text NOT NULL,
    role             text NOT NULL,
    action           text NOT NULL,
    loan_id          text,
    idempotency_key  text NOT NULL,
    status           integer NOT NULL,
    outcome          text NOT NULL
);
CREATE INDEX IF NOT EXISTS api_audit_loan ON api_audit (loan_id, at);
CREATE INDEX IF NOT EXISTS api_audit_principal ON api_audit (principal, at);
