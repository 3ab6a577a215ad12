-- The portfolio report (client/operator.py `portfolio_report`) from a rollup kept current by
-- triggers, so that a report reads a few thousand grouped rows instead of scanning the book.
--
-- Three tables:
-- - report_loans: what each case contributes (its parts), computed from scratch from the case
--   and its rows by report_parts() whenever any of them changes. Keeping it means a change never
--   has to work out what the case contributed before: a stage span is a window over
--   stage_history, not a sum, and an upsert can change a row the trigger never saw inserted.
-- - report_delta: each refresh appends the case's old parts, negated, and its new ones. Writers
--   only ever insert here, so concurrent workers neither wait for nor deadlock on each other's
--   rollup rows.
-- - report_rollup: the deltas summed per group, folded in by report_compact(), one transaction at
--   a time. A report reads rollup + delta in one snapshot, exact whether or not the latest deltas
--   were folded in yet.
--
-- The groups hold the figures as of "now": a report as of a time before some row of its cases
-- (report_loans.latest) cannot use them and scans the base tables instead.
--
-- Writes must run in READ COMMITTED (the default): a refresh waits for any other transaction
-- refreshing the same case, then reads what that one committed.

-- Writers wait from here until this migration commits, so no write falls between the triggers
-- and the backfill at the end. In the order the `record` activity writes these tables: a write in
-- flight finishes first, instead of deadlocking with this migration.
LOCK TABLE contacts, cases, events, payments, stage_history IN SHARE ROW EXCLUSIVE MODE;

DO $$
BEGIN
    IF to_regtype('report_part') IS NULL THEN
        -- One contribution of one case to one group. Columns a part does not use hold fixed
        -- values ('', -1, 'infinity', false, 0), so that they can be part of a primary key.
        CREATE TYPE report_part AS (
            -- case, payment, promise_kept, promise_broken, contact_sent or span
            part        text,
            -- UTC month: opened (case), paid, occurred (promise, contact), entered (span)
            month       date,
            state       text,      -- case: its state
            rank        smallint,  -- span: the stage's place on the ladder (report_stage_rank)
            last_month  date,      -- span: month it ended (next stage or closed); 'infinity': open
            rolled      boolean,   -- span: the next stage was worse
            n           bigint,    -- cases, payments, events, contacts or spans
            placed      numeric,   -- case: amount placed
            outstanding numeric,   -- case: outstanding balance
            amount      numeric    -- payment: amount paid
        );
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS report_loans (
    loan_id         text PRIMARY KEY,
    policy_name     text NOT NULL,
    policy_version  text NOT NULL,
    segment         text NOT NULL,
    currency        char(3) NOT NULL,
    -- The latest time any of the case's counted rows carries (opened, closed, paid, ...): a
    -- report as of an earlier time cannot use the rollup.
    latest          timestamptz NOT NULL,
    parts           report_part[] NOT NULL
);
CREATE INDEX IF NOT EXISTS report_loans_latest ON report_loans (latest);
CREATE INDEX IF NOT EXISTS report_loans_policy_latest ON report_loans (policy_name, latest);

CREATE TABLE IF NOT EXISTS report_rollup (
    policy_name     text NOT NULL,
    policy_version  text NOT NULL,
    segment         text NOT NULL,
    currency        char(3) NOT NULL,
    part            text NOT NULL,
    month           date NOT NULL,
    state           text NOT NULL,
    rank            smallint NOT NULL,
    last_month      date NOT NULL,
    rolled          boolean NOT NULL,
    n               bigint NOT NULL,
    placed          numeric NOT NULL,
    outstanding     numeric NOT NULL,
    amount          numeric NOT NULL,
    PRIMARY KEY (policy_name, policy_version, segment, currency, part, month, state, rank,
                 last_month, rolled)
);

CREATE TABLE IF NOT EXISTS report_delta (
    id              bigserial PRIMARY KEY,
    policy_name     text NOT NULL,
    policy_version  text NOT NULL,
    segment         text NOT NULL,
    currency        char(3) NOT NULL,
    part            text NOT NULL,
    month           date NOT NULL,
    state           text NOT NULL,
    rank            smallint NOT NULL,
    last_month      date NOT NULL,
    rolled          boolean NOT NULL,
    n               bigint NOT NULL,
    placed          numeric NOT NULL,
    outstanding     numeric NOT NULL,
    amount          numeric NOT NULL
);

-- The ladder's stages from best to worst, as client/operator.py STAGE_RANKS; NULL for `closed`.
CREATE OR REPLACE FUNCTION report_stage_rank(stage text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE stage WHEN 'pre_due' THEN 0 WHEN 'early' THEN 1 WHEN 'middle' THEN 2
                      WHEN 'late' THEN 3 WHEN 'legal' THEN 4 WHEN 'written_off' THEN 5 END::smallint
$$;

CREATE OR REPLACE FUNCTION report_month(at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_trunc('month', at AT TIME ZONE 'UTC')::date
$$;

-- The parts of each given case, from the current rows: the report's five aggregations (cases,
-- payments, promise outcomes, contacts made, stage spans) for these cases alone, as of a time
-- after all of their rows. Rows of a loan without a case count for nothing, as in the report.
CREATE OR REPLACE FUNCTION report_parts(loans text[]) RETURNS SETOF report_loans
LANGUAGE sql STABLE AS $$
-- Every join is to `cases` by its primary key: report_refresh plans this once for any number of
-- cases (one, or a bulk load's thousands), and such a plan stays cheap either way.
WITH s AS (
    SELECT loan_id, report_stage_rank(to_stage) AS rank, occurred_at AS entered_at,
           lead(occurred_at) OVER w AS left_at,
           report_stage_rank(lead(to_stage) OVER w) AS next_rank
    FROM stage_history
    WHERE loan_id = ANY (loans)
    WINDOW w AS (PARTITION BY loan_id ORDER BY occurred_at, id)
), p AS (
    SELECT loan_id, GREATEST(opened_at, closed_at) AS latest,
           ROW('case', report_month(opened_at), state, -1, 'infinity', false, 1, amount_placed,
               outstanding, 0)::report_part AS part
    FROM cases
    WHERE loan_id = ANY (loans)
    UNION ALL
    SELECT loan_id, max(paid_at),
           ROW('payment', report_month(paid_at), '', -1, 'infinity', false, count(*), 0, 0,
               sum(amount))::report_part
    FROM payments
    WHERE loan_id = ANY (loans)
    GROUP BY loan_id, report_month(paid_at)
    UNION ALL
    SELECT loan_id, max(occurred_at),
           ROW(kind, report_month(occurred_at), '', -1, 'infinity', false, count(*), 0, 0,
               0)::report_part
    FROM events
    WHERE loan_id = ANY (loans) AND kind IN ('promise_kept', 'promise_broken')
    GROUP BY loan_id, kind, report_month(occurred_at)
    UNION ALL
    SELECT loan_id, max(occurred_at),
           ROW('contact_sent', report_month(occurred_at), '', -1, 'infinity', false, count(*), 0,
               0, 0)::report_part
    FROM contacts
    WHERE loan_id = ANY (loans) AND decision = 'sent'
    GROUP BY loan_id, report_month(occurred_at)
    UNION ALL
    -- A span ends at the next stage change or when the case closed (paid, settled), whichever
    -- came first; with neither it is still open and ends in the report's own month.
    SELECT loan_id, NULL,
           ROW('span', first_month, '', rank, last_month, rolled, count(*), 0, 0, 0)::report_part
    FROM (SELECT s.loan_id, report_month(s.entered_at) AS first_month, s.rank,
                 CASE WHEN s.left_at IS NULL AND c.closed_at IS NULL THEN 'infinity'::date
                      ELSE report_month(LEAST(s.left_at, c.closed_at)) END AS last_month,
                 coalesce(s.next_rank > s.rank, false) AS rolled
          FROM s JOIN cases AS c USING (loan_id)
          WHERE s.rank IS NOT NULL) AS spans
    GROUP BY loan_id, first_month, rank, last_month, rolled
    UNION ALL
    -- Every stage change bounds a span, `closed` included.
    SELECT loan_id, max(entered_at), NULL FROM s GROUP BY loan_id
)
SELECT c.loan_id, c.policy_name, c.policy_version, c.segment, c.currency, g.latest, g.parts
FROM (SELECT loan_id, max(latest) AS latest,
             array_agg(part) FILTER (WHERE (part).part IS NOT NULL) AS parts
      FROM p GROUP BY loan_id) AS g
     JOIN cases AS c USING (loan_id)
$$;

-- Fold the deltas into the rollup. Only the holder of this lock writes report_rollup, so its rows
-- never make anyone wait; a transaction that finds the lock taken leaves its deltas to the next.
CREATE OR REPLACE FUNCTION report_compact() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(7333003) THEN
        RETURN;
    END IF;
    WITH moved AS (DELETE FROM report_delta RETURNING *)
    INSERT INTO report_rollup AS r
    SELECT policy_name, policy_version, segment, currency, part, month, state, rank, last_month,
           rolled, sum(n), sum(placed), sum(outstanding), sum(amount)
    FROM moved
    GROUP BY policy_name, policy_version, segment, currency, part, month, state, rank, last_month,
             rolled
    -- Most writes leave most groups as they were (a case's parts out and the same parts in).
    HAVING sum(n) <> 0 OR sum(placed) <> 0 OR sum(outstanding) <> 0 OR sum(amount) <> 0
    ON CONFLICT (policy_name, policy_version, segment, currency, part, month, state, rank,
                 last_month, rolled)
    DO UPDATE SET n = r.n + EXCLUDED.n, placed = r.placed + EXCLUDED.placed,
                  outstanding = r.outstanding + EXCLUDED.outstanding,
                  amount = r.amount + EXCLUDED.amount;
END
$$;

-- Recompute the parts of these cases: their old parts out (negated), the new ones in. Where the
-- two are the same, the deltas cancel out when they are folded in. Its statements are planned
-- once per session: planning them for each call, as the default can keep doing for a one-case
-- array, costs more than running them.
CREATE OR REPLACE FUNCTION report_refresh(loans text[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    bucket integer;
BEGIN
    IF coalesce(cardinality(loans), 0) = 0 THEN
        RETURN;
    END IF;
    -- Two transactions refreshing the same case take turns, and each statement below reads
    -- what the other committed: a contact written while its case row is being inserted is
    -- counted once, by whichever transaction comes second. Locks are per bucket of cases so
    -- that a bulk write takes at most 1,024 of them, in one order.
    FOR bucket IN SELECT DISTINCT hashtext(l) & 1023 FROM unnest(loans) AS l ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(7333002, bucket);
    END LOOP;
    WITH gone AS (DELETE FROM report_loans WHERE loan_id = ANY (loans) RETURNING *)
    INSERT INTO report_delta (policy_name, policy_version, segment, currency, part, month, state,
                              rank, last_month, rolled, n, placed, outstanding, amount)
    SELECT l.policy_name, l.policy_version, l.segment, l.currency, p.part, p.month, p.state,
           p.rank, p.last_month, p.rolled, -sum(p.n), -sum(p.placed), -sum(p.outstanding),
           -sum(p.amount)
    FROM gone AS l CROSS JOIN LATERAL unnest(l.parts) AS p
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;
    WITH fresh AS (INSERT INTO report_loans SELECT * FROM report_parts(loans) RETURNING *)
    INSERT INTO report_delta (policy_name, policy_version, segment, currency, part, month, state,
                              rank, last_month, rolled, n, placed, outstanding, amount)
    SELECT l.policy_name, l.policy_version, l.segment, l.currency, p.part, p.month, p.state,
           p.rank, p.last_month, p.rolled, sum(p.n), sum(p.placed), sum(p.outstanding),
           sum(p.amount)
    FROM fresh AS l CROSS JOIN LATERAL unnest(l.parts) AS p
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;
    -- Folding in costs about a third of a refresh; once in eight refreshes keeps report_delta
    -- to a few hundred rows.
    IF random() < 0.125 THEN
        PERFORM report_compact();
    END IF;
END
$$;

-- Everything from scratch, for the migration and after a TRUNCATE of a base table. Waits for
-- every transaction refreshing a case, and holds off new ones until it commits.
CREATE OR REPLACE FUNCTION report_rebuild() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bucket integer;
BEGIN
    FOR bucket IN 0..1023 LOOP
        PERFORM pg_advisory_xact_lock(7333002, bucket);
    END LOOP;
    PERFORM pg_advisory_xact_lock(7333003);
    -- DELETE, not TRUNCATE: a report reading in an older snapshot still sees the old rows.
    DELETE FROM report_delta;
    DELETE FROM report_rollup;
    DELETE FROM report_loans;
    INSERT INTO report_loans SELECT * FROM report_parts(ARRAY(SELECT loan_id FROM cases));
    INSERT INTO report_rollup
    SELECT l.policy_name, l.policy_version, l.segment, l.currency, p.part, p.month, p.state,
           p.rank, p.last_month, p.rolled, sum(p.n), sum(p.placed), sum(p.outstanding),
           sum(p.amount)
    FROM report_loans AS l CROSS JOIN LATERAL unnest(l.parts) AS p
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;
END
$$;

-- The triggers: once per statement, with the rows it changed. An upsert that changed nothing
-- (ON CONFLICT DO NOTHING, or DO UPDATE ... WHERE false) has none, and refreshes nothing.
-- `collections.report_deferred = on` (SET LOCAL) skips them, for a bulk load that refreshes the
-- cases it wrote itself before it commits (client/book.py).

CREATE OR REPLACE FUNCTION report_deferred() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('collections.report_deferred', true), '') = 'on'
$$;

CREATE OR REPLACE FUNCTION report_cases_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF report_deferred() THEN
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM report_refresh(ARRAY(SELECT loan_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM report_refresh(ARRAY(SELECT loan_id FROM old_rows));
    ELSE
        -- Most snapshots move only days past due, the agent or updated_at, which no figure uses.
        PERFORM report_refresh(ARRAY(
            SELECT loan_id FROM (
                (SELECT loan_id, policy_name, policy_version, segment, currency, amount_placed,
                        outstanding, state, opened_at, closed_at FROM new_rows
                 EXCEPT
                 SELECT loan_id, policy_name, policy_version, segment, currency, amount_placed,
                        outstanding, state, opened_at, closed_at FROM old_rows)
                UNION ALL
                (SELECT loan_id, policy_name, policy_version, segment, currency, amount_placed,
                        outstanding, state, opened_at, closed_at FROM old_rows
                 EXCEPT
                 SELECT loan_id, policy_name, policy_version, segment, currency, amount_placed,
                        outstanding, state, opened_at, closed_at FROM new_rows)
            ) AS changed GROUP BY loan_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION report_stage_history_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF report_deferred() THEN
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM old_rows));
    ELSE
        PERFORM report_refresh(ARRAY(
            SELECT loan_id FROM (
                (SELECT id, loan_id, to_stage, occurred_at FROM new_rows
                 EXCEPT SELECT id, loan_id, to_stage, occurred_at FROM old_rows)
                UNION ALL
                (SELECT id, loan_id, to_stage, occurred_at FROM old_rows
                 EXCEPT SELECT id, loan_id, to_stage, occurred_at FROM new_rows)
            ) AS changed GROUP BY loan_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION report_payments_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF report_deferred() THEN
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM old_rows));
    ELSE
        PERFORM report_refresh(ARRAY(
            SELECT loan_id FROM (
                (SELECT loan_id, amount, paid_at FROM new_rows
                 EXCEPT ALL SELECT loan_id, amount, paid_at FROM old_rows)
                UNION ALL
                (SELECT loan_id, amount, paid_at FROM old_rows
                 EXCEPT ALL SELECT loan_id, amount, paid_at FROM new_rows)
            ) AS changed GROUP BY loan_id));
    END IF;
    RETURN NULL;
END
$$;

-- Only promise outcomes count; most events are something else.
CREATE OR REPLACE FUNCTION report_events_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF report_deferred() THEN
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM new_rows
                                     WHERE kind IN ('promise_kept', 'promise_broken')));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM old_rows
                                     WHERE kind IN ('promise_kept', 'promise_broken')));
    ELSE
        PERFORM report_refresh(ARRAY(
            SELECT loan_id FROM (
                (SELECT loan_id, kind, occurred_at FROM new_rows
                 EXCEPT ALL SELECT loan_id, kind, occurred_at FROM old_rows)
                UNION ALL
                (SELECT loan_id, kind, occurred_at FROM old_rows
                 EXCEPT ALL SELECT loan_id, kind, occurred_at FROM new_rows)
            ) AS changed
            WHERE kind IN ('promise_kept', 'promise_broken') GROUP BY loan_id));
    END IF;
    RETURN NULL;
END
$$;

-- Only contacts made count. The upsert of an attempt's outcome leaves the decision as it was
-- (refreshes nothing) unless the provider refused the send for good ('sent' -> 'failed').
CREATE OR REPLACE FUNCTION report_contacts_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF report_deferred() THEN
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM new_rows
                                     WHERE decision = 'sent'));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM report_refresh(ARRAY(SELECT DISTINCT loan_id FROM old_rows
                                     WHERE decision = 'sent'));
    ELSE
        PERFORM report_refresh(ARRAY(
            SELECT loan_id FROM (
                (SELECT loan_id, decision, occurred_at FROM new_rows
                 EXCEPT ALL SELECT loan_id, decision, occurred_at FROM old_rows)
                UNION ALL
                (SELECT loan_id, decision, occurred_at FROM old_rows
                 EXCEPT ALL SELECT loan_id, decision, occurred_at FROM new_rows)
            ) AS changed GROUP BY loan_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION report_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM report_rebuild();
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['cases', 'stage_history', 'payments', 'events', 'contacts'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS report_%1$s_insert ON %1$I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS report_%1$s_update ON %1$I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS report_%1$s_delete ON %1$I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS report_%1$s_truncate ON %1$I', t);
        EXECUTE format('CREATE TRIGGER report_%1$s_insert AFTER INSERT ON %1$I '
                       'REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION report_%1$s_changed()', t);
        EXECUTE format('CREATE TRIGGER report_%1$s_update AFTER UPDATE ON %1$I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION report_%1$s_changed()', t);
        EXECUTE format('CREATE TRIGGER report_%1$s_delete AFTER DELETE ON %1$I '
                       'REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION report_%1$s_changed()', t);
        EXECUTE format('CREATE TRIGGER report_%1$s_truncate AFTER TRUNCATE ON %1$I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION report_truncated()', t);
    END LOOP;
END
$$;

SELECT report_rebuild();
