-- Issue 15, webhooks: what Twilio and SendGrid report back about our messages, the addresses
-- they tell us not to use again, and the borrowers' replies. No phone number, e-mail address or
-- message text is stored: addresses are contact keys (`p:<hash>`, `e:<hash>`, as in contacts),
-- a reply's text is encrypted with the collections keys (or left out without them).

-- Where a message got to, on the contact row it was sent under (outbox_key = idempotency_key).
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS delivery_status text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS delivery_error text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS delivery_at timestamptz;
CREATE INDEX IF NOT EXISTS contacts_provider_id ON contacts (provider_id)
    WHERE provider_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_provider_id ON outbox (provider_id)
    WHERE provider_id IS NOT NULL;

-- Every provider callback applied, once: `event_key` is SendGrid's sg_event_id, Twilio's
-- `<MessageSid>:<MessageStatus>` for a status callback, `inbound:<MessageSid>` for a reply.
CREATE TABLE IF NOT EXISTS provider_events (
    id           bigserial PRIMARY KEY,
    provider     text NOT NULL CHECK (provider IN ('twilio', 'sendgrid')),
    event_key    text NOT NULL,
    kind         text NOT NULL,      -- delivered, undelivered, bounce, dropped, inbound, ...
    provider_id  text,               -- MessageSid, sg_message_id
    outbox_key   text,               -- the message it is about, when known
    loan_id      text,
    contact_key  text,               -- p:<hash> or e:<hash>
    error_code   text,               -- Twilio ErrorCode, SendGrid bounce status or type
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, event_key)
);
CREATE INDEX IF NOT EXISTS provider_events_outbox ON provider_events (outbox_key);
CREATE INDEX IF NOT EXISTS provider_events_contact ON provider_events (contact_key, received_at);

-- An address a channel may not use: an SMS opt-out (STOP, 退订, a 21610 refusal; lifted by START),
-- a number that cannot take SMS (30005, 30006), an e-mail address that bounced, was dropped,
-- reported spam or unsubscribed. One row per contact key, channel and kind, across every loan
-- of that number or address; `reserve_contact` refuses the channel while a row is not lifted.
CREATE TABLE IF NOT EXISTS contact_suppressions (
    contact_key  text NOT NULL,
    channel      text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('opt_out', 'undeliverable', 'bounce',
                                               'spamreport', 'unsubscribe')),
    rule         text NOT NULL,      -- tcpa.opt_out, sms.undeliverable, email.suppressed
    reason       text NOT NULL,      -- what happened, without the address
    source       text NOT NULL,      -- the provider event that set it
    created_at   timestamptz NOT NULL DEFAULT now(),
    lifted_at    timestamptz,
    lifted_by    text,
    PRIMARY KEY (contact_key, channel, kind)
);
CREATE INDEX IF NOT EXISTS contact_suppressions_active ON contact_suppressions (contact_key, channel)
    WHERE lifted_at IS NULL;

-- A borrower's reply that is not a keyword, for the agents: the loans the number maps to and the
-- text encrypted (AES-GCM under `key_id`, one of COLLECTIONS_ENCRYPTION_KEYS) or NULL.
CREATE TABLE IF NOT EXISTS inbound_replies (
    id           bigserial PRIMARY KEY,
    message_sid  text NOT NULL UNIQUE,
    contact_key  text NOT NULL,
    loan_ids     text[] NOT NULL DEFAULT '{}',
    kind         text NOT NULL,      -- opt_out, opt_in, help, reply
    body_cipher  bytea,
    key_id       text,
    body_chars   integer NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS inbound_replies_open ON inbound_replies (received_at)
    WHERE status = 'open' AND kind = 'reply';
