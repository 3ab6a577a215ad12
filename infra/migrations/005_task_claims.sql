-- Agents' claims on call and visit tasks (a lease: two agents never hold one task, and a claim
-- not worked expires), and the access log of every reveal of a borrower's contact details.

CREATE TABLE IF NOT EXISTS task_claims (
    task_key     text PRIMARY KEY,
    loan_id      text NOT NULL,
    agent        text NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS task_claims_agent ON task_claims (agent, lease_until);

-- Who saw which borrower's contact details, on which task, when (never the details themselves).
CREATE TABLE IF NOT EXISTS contact_reveals (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    agent     text NOT NULL,
    task_key  text NOT NULL,
    loan_id   text NOT NULL,
    fields    text NOT NULL,   -- "phone,email"
    surface   text NOT NULL    -- "console", "api"
);
CREATE INDEX IF NOT EXISTS contact_reveals_loan ON contact_reveals (loan_id, at);
