-- Agency placements (issue 19): one row per placement of a case with a collection agency,
-- written by the case (activity `record_placement`) when it starts, as money is recovered, and
-- when it ends. Keyed by the workflow's placement key: a retried write changes nothing twice.
CREATE TABLE IF NOT EXISTS placements (
    id                  bigserial PRIMARY KEY,
    placement_key       text NOT NULL UNIQUE,
    loan_id             text NOT NULL,
    agency_id           text NOT NULL,
    currency            text NOT NULL,
    placed_at           timestamptz NOT NULL,
    term_ends_at        timestamptz NOT NULL,
    amount_at_placement numeric(20, 4) NOT NULL,
    commission_rate     numeric(8, 6) NOT NULL,
    recovered           numeric(20, 4) NOT NULL DEFAULT 0,
    commission          numeric(20, 4) NOT NULL DEFAULT 0,
    breaches            integer NOT NULL DEFAULT 0,
    actor               text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    ended_at            timestamptz,
    end_reason          text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS placements_agency_open ON placements (agency_id) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS placements_loan ON placements (loan_id);

-- The `agency` role of API keys: a key named after the agency's id in the roster.
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('loan-system', 'agent', 'operator', 'agency'));
