-- Issue 14: agent calls inside the rules, withdrawn tasks, money that cannot be applied.
-- Idempotent (IF NOT EXISTS), like every migration.

-- When a call or visit may be worked, for the queue: the rule pack's window in the borrower's
-- local time, the allowed periods inside the task's span ([[from, until], ...] UTC ISO), and the
-- room left under each cap when the task was created ({cap id: count}). A withdrawn task keeps
-- why (a hold, a dispute, a cease, the case's end); a done one when the call happened and the
-- rule it broke, if any.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS rule_pack text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS timezone text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS window_start text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS window_end text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS work_windows jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS caps_left jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS reason text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS contacted_at timestamptz;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS breach_rule text;

-- A call or visit made outside the window or over a cap is a contact row with decision 'breach'
-- and the rule it broke (it counts towards the caps like 'sent'); the report counts them.
CREATE INDEX IF NOT EXISTS contacts_breaches ON contacts (loan_id) INCLUDE (rule, occurred_at)
    WHERE decision = 'breach';

-- Money reported as received that could not be applied (wrong currency, not positive): never
-- dropped. 'resolved' once a later report of the same payment id was applied.
CREATE TABLE IF NOT EXISTS unapplied_payments (
    id               bigserial PRIMARY KEY,
    loan_id          text NOT NULL,
    payment_id       text NOT NULL,
    amount           numeric NOT NULL,  -- as reported, whatever it was (unconstrained)
    currency         text NOT NULL,
    received_at      timestamptz NOT NULL,
    reason           text NOT NULL,
    status           text NOT NULL DEFAULT 'unapplied' CHECK (status IN ('unapplied', 'resolved')),
    UNIQUE (loan_id, payment_id)
);
CREATE INDEX IF NOT EXISTS unapplied_payments_open ON unapplied_payments (loan_id)
    WHERE status = 'unapplied';
