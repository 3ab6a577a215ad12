-- Issue 18: the borrower's personal data outside Temporal. One vault entry per loan, the
-- personal fields (name, phone, e-mail, WeCom id) as AES-GCM ciphertext under `key_id` (one of
-- COLLECTIONS_ENCRYPTION_KEYS); the workflow carries only `borrower_ref`. Erasing an entry drops
-- the ciphertext and keeps the row, so a case can say its borrower was erased, and when.
CREATE TABLE IF NOT EXISTS borrower_vault (
    borrower_ref  text PRIMARY KEY,
    loan_id       text NOT NULL UNIQUE,
    borrower_id   text NOT NULL,      -- the loan system's borrower id, else the phone's key
    key_id        text,
    ciphertext    bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    erased_at     timestamptz,
    CHECK ((erased_at IS NULL) = (ciphertext IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS borrower_vault_borrower ON borrower_vault (borrower_id);

-- A case that must be kept (litigation): its purge waits while a hold is not released. Set by an
-- operator, or by the purge itself while the case has a litigation legal action.
CREATE TABLE IF NOT EXISTS legal_holds (
    loan_id      text PRIMARY KEY,
    reason       text NOT NULL,
    set_by       text NOT NULL,
    set_at       timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    released_by  text
);

-- Every purge and erasure: what, when, by whom (an operator, or the retention schedule), the
-- cases; never the data itself.
CREATE TABLE IF NOT EXISTS erasure_audit (
    id            bigserial PRIMARY KEY,
    run_key       text NOT NULL UNIQUE,   -- a retried purge or erasure writes nothing twice
    kind          text NOT NULL CHECK (kind IN ('purge', 'erasure')),
    actor         text NOT NULL,
    reason        text NOT NULL,
    borrower_id   text,
    loan_ids      text[] NOT NULL DEFAULT '{}',
    held_loan_ids text[] NOT NULL DEFAULT '{}',
    what          text[] NOT NULL DEFAULT '{}',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS erasure_audit_at ON erasure_audit (at);
