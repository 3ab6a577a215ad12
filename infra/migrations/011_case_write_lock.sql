-- Issue 21: a case's writes travel with its actions, so two transactions of one case can run at
-- once (a send and a notice, or the record of a wait). Each takes its case's report bucket lock
-- (the lock report_refresh in 003_report_rollup.sql takes from its triggers, same bucket) before
-- it locks the case's row or reserves a contact: taken later, by a trigger, one transaction can
-- hold the bucket waiting for the case row while the other holds the row waiting for the bucket.
CREATE OR REPLACE FUNCTION case_write_lock(loan text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(7333002, hashtext(loan) & 1023)
$$;
