-- Issue 17, WeCom's callbacks: a contact deleting the lender's staff member (or the member the
-- contact) is a provider event like Twilio's and SendGrid's, applied once, and suppresses WeCom
-- for that external contact (`contact_suppressions`, contact key `w:<hash>`).
ALTER TABLE provider_events DROP CONSTRAINT IF EXISTS provider_events_provider_check;
ALTER TABLE provider_events ADD CONSTRAINT provider_events_provider_check
    CHECK (provider IN ('twilio', 'sendgrid', 'wecom'));
