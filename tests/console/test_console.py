"""The console in a real browser (Debian's chromium) against the running service on the real
stack: what agents and operators see, and what they are refused."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from playwright.async_api import Page, expect

from service.cases import start_loan, status
from tests.console.cases import (
    CALL_SCREEN,
    Console,
    claim_and_verify,
    loan,
    local_today,
    open_call_task,
    queue_row,
    sign_in,
    zone_at_local_hour,
)
from tests.helpers import eventually

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_agent_claims_verifies_and_records_a_promise(
        page: Page, console: Console, pool: asyncpg.Pool) -> None:
    new, task_key = await open_call_task(console, pool)
    await sign_in(page, console, "agent-7")
    await page.goto("/console/queue")
    row = queue_row(page, new.loan_id)
    await expect(row.locator(".window")).to_contain_text("Allowed")
    await expect(row.locator(".phone")).not_to_contain_text(new.phone)
    await row.locator("button.claim").click()
    await page.wait_for_url(CALL_SCREEN)
    # Verification first: the number to dial, no debt detail yet.
    await expect(page.locator("#phone")).to_have_text(new.phone)
    assert await page.locator("#summary").count() == 0
    for box in await page.locator("#verify input[type=checkbox]").all():
        await box.check()
    await page.click("#verify button[type=submit]")
    await expect(page.locator("#outstanding")).to_have_text("CN¥1,200.00")
    promised = local_today(new.timezone) + timedelta(days=3)
    await page.check("input[name=outcome][value=promised]")
    await page.fill("input[name=amount]", "400.00")
    await page.fill("input[name=date]", promised.isoformat())
    await page.screenshot(path=str(Path(__file__).parent / "screenshots" / "call-screen.png"),
                          full_page=True)
    DOCS.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).parent / "screenshots" / "call-screen.png",
                DOCS / "console-call-screen.png")
    await page.click("#outcome-form button[type=submit]:not([name])")
    await page.wait_for_url(f"**/console/cases/{new.loan_id}")
    await expect(page.locator("#promise")).to_contain_text("CN¥400.00")
    await expect(page.locator("#promise")).to_contain_text(promised.isoformat())
    await expect(page.locator("#next-action")).to_contain_text("paused")
    await expect(page.locator("#timeline")).to_contain_text("outcome: promised")
    reveals = await pool.fetch("SELECT * FROM contact_reveals WHERE task_key = $1", task_key)
    assert reveals and {r["agent"] for r in reveals} == {"agent-7"}
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_key = $1", task_key) == "done"


async def test_a_promise_in_the_past_shows_the_refusal_and_changes_nothing(
        page: Page, console: Console, pool: asyncpg.Pool) -> None:
    new, task_key = await open_call_task(console, pool, us=True)
    await sign_in(page, console, "agent-7")
    await claim_and_verify(page, new.loan_id)
    await expect(page.locator("#mini-miranda")).to_contain_text("attempt to collect a debt")
    yesterday = local_today(new.timezone) - timedelta(days=1)
    await page.check("input[name=outcome][value=promised]")
    await page.fill("input[name=amount]", "100.00")
    await page.fill("input[name=date]", yesterday.isoformat())
    await page.click("#outcome-form button[type=submit]:not([name])")
    await expect(page.locator("#problem")).to_contain_text("in the past")
    await expect(page.locator("#promise")).to_have_text("none")
    after = await status(console.client, new.loan_id)
    assert after.promise is None
    assert after.outstanding == new.amount_overdue
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_key = $1", task_key) == "open"


async def _task_outside_the_window(console: Console, pool: asyncpg.Pool) -> tuple[str, str]:
    """A real case whose borrower it is 03:00 for, and a call task left open from the evening
    before (tasks outlive the window: an agent has a day to report)."""
    zone = zone_at_local_hour(3)
    new = loan(zone, due_in=20)
    assert await start_loan(console.client, new, task_queue=console.task_queue) == "started"
    await eventually(lambda: pool.fetchval("SELECT 1 FROM cases WHERE loan_id = $1",
                                           new.loan_id), lambda found: found is not None)
    task_key = f"collection-{new.loan_id}/evening-call"
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO tasks (task_key, loan_id, workflow_id, kind, step_id, priority, due_by, "
        "created_at) VALUES ($1, $2, $3, 'call', 'evening-call', 1000, $4, $5)",
        task_key, new.loan_id, f"collection-{new.loan_id}", now + timedelta(hours=20),
        now - timedelta(hours=6))
    return new.loan_id, task_key


async def test_claim_is_disabled_outside_the_window_with_the_reason(
        page: Page, console: Console, pool: asyncpg.Pool) -> None:
    loan_id, task_key = await _task_outside_the_window(console, pool)
    await sign_in(page, console, "agent-7")
    await page.goto("/console/queue")
    row = queue_row(page, loan_id)
    await expect(row.locator("button.claim")).to_be_disabled()
    await expect(row.locator(".reason")).to_contain_text("cn.cba.quiet_hours_22_08")
    await expect(row.locator(".reason")).to_contain_text("08:00")
    await expect(row.locator(".local-time")).to_contain_text("03:")
    try:
        await row.scroll_into_view_if_needed()
    finally:
        await pool.execute("UPDATE tasks SET status = 'cancelled' WHERE task_key = $1", task_key)


async def test_the_queue_in_chinese_shows_chinese_labels_and_cny(
        page: Page, console: Console, pool: asyncpg.Pool) -> None:
    new, _ = await open_call_task(console, pool)
    await sign_in(page, console, "agent-8")
    await page.goto("/console/queue")
    await page.select_option("#lang-form select[name=lang]", "zh-CN")
    await page.wait_for_url("**/console/queue")
    await expect(page.locator("h1")).to_have_text("待处理的电话和外访任务")
    await expect(page.locator("#queue thead")).to_contain_text("余额")
    row = queue_row(page, new.loan_id)
    await expect(row.locator(".amount")).to_have_text("¥1,200.00")
    await expect(row.locator(".window")).to_contain_text("可以")
    await page.goto("/console/queue")  # the choice is remembered
    await expect(page.locator("button.claim").first).to_have_text("领取")


async def test_operator_filters_cases_by_stage(page: Page, console: Console,
                                               pool: asyncpg.Pool) -> None:
    zone = zone_at_local_hour(15)
    loans = {"pre_due": loan(zone, due_in=10), "early": loan(zone, due_in=-2),
             "middle": loan(zone, due_in=-9)}
    for new in loans.values():
        await start_loan(console.client, new, task_queue=console.task_queue)
    ids = [new.loan_id for new in loans.values()]
    wanted = {new.loan_id: stage for stage, new in loans.items()}
    await eventually(
        lambda: pool.fetch("SELECT loan_id, stage FROM cases WHERE loan_id = ANY($1::text[])",
                           ids),
        lambda rows: {r["loan_id"]: r["stage"] for r in rows} == wanted, timeout=60)
    await sign_in(page, console, "ops")
    await page.goto("/console/cases")
    await page.select_option("#filters select[name=stage]", "middle")
    await page.click("#filters button[type=submit]")
    await page.wait_for_url("**stage=middle**")
    expected = {r["loan_id"] for r in await pool.fetch(
        "SELECT loan_id FROM cases WHERE stage = 'middle'")}
    shown: set[str] = set()
    while True:
        for row in await page.locator("#cases tbody tr").all():
            shown.add(str(await row.get_attribute("data-loan")))
            await expect(row.locator(".stage")).to_have_text("middle")
        if await page.locator("#next").count() == 0:
            break
        await page.click("#next")
    assert shown == expected
    assert loans["middle"].loan_id in shown
    assert not {loans["early"].loan_id, loans["pre_due"].loan_id} & shown


async def test_the_dashboard_renders_its_charts(page: Page, console: Console,
                                                pool: asyncpg.Pool) -> None:
    zone = zone_at_local_hour(15)
    new = loan(zone, due_in=-9)
    await start_loan(console.client, new, task_queue=console.task_queue)
    await eventually(lambda: pool.fetchval("SELECT policy_name FROM cases WHERE loan_id = $1",
                                           new.loan_id), lambda name: name is not None)
    # A call outside the quiet hours' window on this case, recorded as the workflow records one,
    # and a payment in another currency the case could not apply.
    await pool.execute(
        """INSERT INTO contacts (idempotency_key, loan_id, borrower_key, contact_key, channel,
               step_id, stage, decision, rule, occurred_at)
           VALUES ($1, $2, $3, $3, 'call', 'call', 'early', 'breach', $4, now())""",
        f"{new.loan_id}/breach", new.loan_id, f"b:{new.loan_id}", "cn.cba.quiet_hours_22_08")
    await pool.execute(
        """INSERT INTO unapplied_payments (loan_id, payment_id, amount, currency, received_at,
               reason, status) VALUES ($1, 'u1', 25.00, 'USD', now(), 'currency', 'unapplied')""",
        new.loan_id)
    breaches = await pool.fetchval(
        "SELECT count(*) FROM contacts WHERE decision = 'breach' AND occurred_at <= now()")
    assert breaches >= 1
    await sign_in(page, console, "ops")
    await page.goto("/console/dashboard")
    images = page.locator(".charts img")
    await expect(images).to_have_count(5)
    for img in await images.all():
        await expect(img).to_have_js_property("complete", True)
        assert await img.evaluate("i => i.naturalWidth") > 100
        answer = await page.request.get(str(await img.get_attribute("src")))
        assert answer.headers["content-type"] == "image/png"
        body = await answer.body()
        assert body.startswith(b"\x89PNG") and len(body) > 2000
    await expect(page.locator("#chart-breaches")).to_have_attribute(
        "alt", "Compliance breaches by rule")
    await expect(page.locator("#breaches h2")).to_have_text(f"Compliance breaches: {breaches}")
    await expect(page.locator("#breaches")).to_contain_text("cn.cba.quiet_hours_22_08")
    await expect(page.locator("#unapplied")).to_contain_text("USD")
    await expect(page.locator("#figures")).to_contain_text("default@")
    await page.screenshot(path=str(DOCS.parent / "tests" / "console" / "screenshots"
                                   / "dashboard.png"), full_page=True)
    DOCS.mkdir(exist_ok=True)
    await page.screenshot(path=str(DOCS / "console-dashboard.png"), full_page=True)
    # The captions and the figure blocks in Chinese.
    await page.select_option("#lang-form select[name=lang]", "zh-CN")
    await page.wait_for_url("**/console/dashboard")
    await expect(page.locator("#chart-breaches + figcaption")).to_have_text("各规则合规违规次数")
    await expect(page.locator("#breaches h2")).to_contain_text("合规违规")
    await expect(page.locator("#breaches h2")).to_contain_text(f"{breaches} 次")
    await expect(page.locator("#unapplied h2")).to_have_text("未入账还款")


async def test_an_agent_is_refused_operator_pages_and_others_cases(
        page: Page, console: Console, pool: asyncpg.Pool) -> None:
    new, _ = await open_call_task(console, pool)
    # agent-7 holds the task.
    await sign_in(page, console, "agent-7")
    await claim_and_verify(page, new.loan_id)
    await page.context.clear_cookies()
    await sign_in(page, console, "agent-8")
    for path in ("/console/cases", "/console/dashboard", f"/console/cases/{new.loan_id}"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 403, path
        await expect(page.locator("#problem")).to_contain_text("may not open this page")
    await page.goto("/console/queue")
    row = queue_row(page, new.loan_id)
    await expect(row).to_contain_text("agent-7")
    await expect(row.locator(".phone")).to_contain_text("*")
    assert new.phone not in await page.content()
    answer = await page.goto(f"/console/call?task={_}")
    assert answer is not None and answer.status == 403
    assert new.phone not in await page.content()


async def test_a_form_without_its_csrf_token_is_refused(page: Page, console: Console,
                                                        pool: asyncpg.Pool) -> None:
    new, task_key = await open_call_task(console, pool)
    await sign_in(page, console, "agent-7")
    await page.goto("/console/queue")
    forms: list[dict[str, str | float | bool]] = [
        {"task_key": task_key}, {"task_key": task_key, "csrf": "forged"}]
    for form in forms:
        answer = await page.request.post("/console/tasks/claim", form=form, max_redirects=0)
        assert answer.status == 400
        assert "expired" in await answer.text()
    assert await pool.fetchval("SELECT count(*) FROM task_claims WHERE task_key = $1",
                               task_key) == 0
    await page.goto("/console/queue")
    await expect(queue_row(page, new.loan_id).locator("button.claim")).to_be_enabled()
