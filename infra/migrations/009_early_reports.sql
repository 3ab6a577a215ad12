-- Issue 18, the soak: a provider's report that arrives before the send has recorded the
-- provider's id for the message is kept unlinked (loan_id NULL) and linked when the message's
-- contact row is written as sent (activities/database/delivery_status.py). This finds them.
CREATE INDEX IF NOT EXISTS provider_events_unlinked ON provider_events (provider_id)
    WHERE loan_id IS NULL;
