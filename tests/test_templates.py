"""Borrower message templates: every template, channel and locale renders and says what it must."""

from __future__ import annotations

import re

import jinja2
import pytest

from activities.templates import (
    ENV,
    LOCALES,
    TEMPLATE_DIR,
    RenderedMessage,
    UnknownTemplateError,
    known_templates,
    render,
)

BASE = {
    "lender": "Acme Lending",
    "borrower_name": "Jane Doe",
    "loan_ref": "LN-000123",
    "amount": "1,250.00",
    "currency": "CNY",
    "days_overdue": 47,
    "due_date": "2024-05-01",
    "payment_link": "https://pay.example.com/p/LN-000123",
    "opt_out": False,
    "unsubscribe_link": "https://example.com/unsubscribe/abc",
    "validation_notice": False,
    "dispute_by": "2024-06-20",
}
EXTRAS = {
    "paid_amount": "300.00",
    "excess": "",
    "promised_amount": "500.00",
    "promised_date": "2024-05-25",
    "installment_amount": "250.00",
    "installment_due": "2024-06-01",
    "settlement_amount": "900.00",
    "agency_name": "Northwind Recovery Ltd",
    "respond_by": "2024-06-10",
    "days_before_due": 3,
}

_OVERDUE = (
    "lender", "borrower_name", "loan_ref", "amount", "currency", "days_overdue", "payment_link",
)
_RECEIPT = ("lender", "borrower_name", "loan_ref", "currency")

# template -> (channels, context keys whose values the message must contain, keys it must not)
EXPECTED: dict[str, tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]] = {
    "pre_due_reminder": (
        frozenset({"sms", "email"}),
        ("lender", "borrower_name", "loan_ref", "amount", "currency", "due_date", "days_before_due",
         "payment_link"),
        (),
    ),
    "early_reminder": (frozenset({"sms", "email"}), _OVERDUE, ()),
    "firm_reminder": (frozenset({"sms", "email"}), _OVERDUE, ()),
    "formal_notice": (frozenset({"email"}), (*_OVERDUE, "due_date"), ()),
    "late_notice": (frozenset({"sms", "email"}), _OVERDUE, ()),
    "agency_placement_notice": (frozenset({"sms", "email"}), (*_OVERDUE, "agency_name"), ()),
    "lawyer_letter": (frozenset({"email"}), (*_OVERDUE, "respond_by", "due_date"), ()),
    "litigation_notice": (frozenset({"email"}), _OVERDUE, ()),
    # Collection is ending (allowed after a cease request): no request to pay.
    "write_off_notice": (
        frozenset({"email"}),
        ("lender", "borrower_name", "loan_ref", "amount", "currency", "days_overdue"),
        ("payment_link",),
    ),
    "payment_receipt": (frozenset({"sms", "email"}), (*_RECEIPT, "paid_amount"), ("payment_link",)),
    "payment_ack": (frozenset({"sms"}), (*_OVERDUE, "paid_amount"), ()),
    "settlement_receipt": (
        frozenset({"sms", "email"}),
        (*_RECEIPT, "settlement_amount"),
        ("payment_link",),
    ),
    "promise_confirmation": (
        frozenset({"sms"}),
        ("lender", "borrower_name", "loan_ref", "currency", "promised_amount", "promised_date",
         "payment_link"),
        (),
    ),
    "installment_reminder": (
        frozenset({"sms", "email"}),
        ("lender", "borrower_name", "loan_ref", "amount", "currency", "installment_amount",
         "installment_due", "payment_link"),
        (),
    ),
    "validation_notice": (
        frozenset({"email"}),
        (*_OVERDUE, "due_date", "dispute_by"),
        (),
    ),
}
# Not an attempt to collect: these never carry the validation block.
NO_VALIDATION_BLOCK = {"payment_receipt", "settlement_receipt", "write_off_notice"}

CASES = [
    (name, channel, locale)
    for name, (channels, _, _) in EXPECTED.items()
    for channel in sorted(channels)
    for locale in LOCALES
]
IDS = [f"{n}.{c}.{loc}" for n, c, loc in CASES]

OPT_OUT_SMS = {"en": "Reply STOP to opt out.", "zh-CN": "回复TD退订"}
DISPUTE_30 = {"en": "within 30 days", "zh-CN": "30天内"}

# Third-party disclosure and threats have no place in a borrower message.
FORBIDDEN = re.compile(
    r"\b(famil(y|ies)|relatives?|friends?|employers?|colleagues?|co-?workers?|neighbou?rs?|"
    r"your contacts|arrest(ed)?|jail|prison|police|criminal|shame|expose)\b"
    r"|家人|家属|亲属|亲友|朋友|单位|同事|领导|邻居|通讯录|紧急联系人"
    r"|逮捕|拘留|坐牢|公安|报警|刑事|曝光|上门",
    re.IGNORECASE,
)


def context(name: str, **overrides: object) -> dict[str, object]:
    ctx: dict[str, object] = {**BASE, **EXTRAS}
    if name == "pre_due_reminder":
        ctx["days_overdue"] = -3
    ctx.update(overrides)
    return ctx


@pytest.mark.parametrize(("name", "channel", "locale"), CASES, ids=IDS)
def test_renders_with_required_content(name: str, channel: str, locale: str) -> None:
    ctx = context(name)
    msg = render(name, channel, locale, ctx)
    assert isinstance(msg, RenderedMessage)
    _, must, must_not = EXPECTED[name]
    text = f"{msg.subject or ''}\n{msg.body}"
    for key in must:
        assert str(ctx[key]) in text, f"{name}.{channel}.{locale} lacks {key}={ctx[key]!r}"
    for key in must_not:
        assert str(ctx[key]) not in text, f"{name}.{channel}.{locale} has {key}"
    assert "{{" not in text and "{%" not in text
    assert OPT_OUT_SMS[locale] not in text
    assert str(ctx["unsubscribe_link"]) not in text
    assert str(ctx["dispute_by"]) not in text or name == "validation_notice"
    if channel == "email":
        assert msg.subject, "an email has a subject"
        assert "\n" not in msg.subject
        assert not msg.body.startswith("Subject:")
        assert msg.body == msg.body.strip()
        assert "\n\n\n" not in msg.body
    else:
        assert msg.subject is None
        assert "\n" not in msg.body
        if locale == "en":
            assert len(msg.body) < 300, f"{name} SMS is {len(msg.body)} chars"
        else:
            assert msg.body.startswith(f"【{ctx['lender']}】")
            assert len(msg.body) < 160, f"{name} SMS is {len(msg.body)} chars"


@pytest.mark.parametrize(("name", "channel", "locale"), CASES, ids=IDS)
def test_opt_out_line_ends_the_message(name: str, channel: str, locale: str) -> None:
    msg = render(name, channel, locale, context(name, opt_out=True, validation_notice=True))
    last_line = msg.body.splitlines()[-1]
    if channel == "sms":
        assert msg.body.endswith(OPT_OUT_SMS[locale])
        assert msg.body.count(OPT_OUT_SMS[locale]) == 1
    else:
        assert last_line.endswith(str(BASE["unsubscribe_link"]))
        assert msg.body.count(str(BASE["unsubscribe_link"])) == 1
        assert ("unsubscribe" if locale == "en" else "退订") in last_line


@pytest.mark.parametrize(("name", "channel", "locale"), CASES, ids=IDS)
def test_validation_notice_block(name: str, channel: str, locale: str) -> None:
    msg = render(name, channel, locale, context(name, validation_notice=True))
    if name in NO_VALIDATION_BLOCK:
        assert str(BASE["dispute_by"]) not in msg.body
        return
    assert DISPUTE_30[locale] in msg.body
    assert str(BASE["dispute_by"]) in msg.body
    if channel == "email":
        assert msg.body.count(DISPUTE_30[locale]) == 1  # once, even in validation_notice itself
        # Regulation F content: creditor, amount now, itemization date, how to dispute.
        for value in (BASE["lender"], BASE["amount"], BASE["currency"], BASE["due_date"]):
            assert str(value) in msg.body
        assert "cfpb.gov" in msg.body
        assert ("dispute" if locale == "en" else "异议") in msg.body


def test_validation_notice_template_always_carries_the_block() -> None:
    for locale in LOCALES:
        msg = render("validation_notice", "email", locale, context("validation_notice"))
        assert DISPUTE_30[locale] in msg.body and str(BASE["dispute_by"]) in msg.body


@pytest.mark.parametrize("locale", LOCALES)
def test_excess_is_refunded_only_when_there_is_one(locale: str) -> None:
    refund = {"en": "refunded", "zh-CN": "退还"}[locale]
    for channel in ("sms", "email"):
        plain = render("payment_receipt", channel, locale, context("payment_receipt"))
        assert refund not in plain.body
        ctx = context("payment_receipt", excess="50.00")
        over = render("payment_receipt", channel, locale, ctx)
        assert refund in over.body and "50.00 CNY" in over.body


def test_defaults_for_template_specific_variables() -> None:
    base_only = dict(BASE)
    # days_before_due is derived from days_overdue; excess defaults to "" (no refund sentence).
    msg = render("pre_due_reminder", "sms", "en", {**base_only, "days_overdue": -5})
    assert "in 5 days" in msg.body
    msg = render("pre_due_reminder", "sms", "en", {**base_only, "days_overdue": -1})
    assert "in 1 day." in msg.body
    msg = render("payment_receipt", "sms", "en", base_only)
    assert f"{BASE['amount']} {BASE['currency']}" in msg.body and "refund" not in msg.body
    msg = render("agency_placement_notice", "sms", "en", base_only)
    assert "third-party collection agency" in msg.body
    msg = render("lawyer_letter", "email", "zh-CN", base_only)
    assert "尽快" in msg.body
    # A partial payment has no sensible default amount.
    with pytest.raises(jinja2.UndefinedError, match="paid_amount"):
        render("payment_ack", "sms", "en", base_only)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(
    "missing", ["lender", "amount", "payment_link", "opt_out", "validation_notice"]
)
def test_missing_context_variable_raises(locale: str, missing: str) -> None:
    ctx = context("early_reminder")
    del ctx[missing]
    for channel in ("sms", "email"):
        with pytest.raises(jinja2.UndefinedError, match=missing):
            render("early_reminder", channel, locale, ctx)


def test_missing_flag_dependent_variables_raise() -> None:
    ctx = context("early_reminder", opt_out=True)
    del ctx["unsubscribe_link"]
    with pytest.raises(jinja2.UndefinedError, match="unsubscribe_link"):
        render("early_reminder", "email", "en", ctx)
    ctx = context("early_reminder", validation_notice=True)
    del ctx["dispute_by"]
    with pytest.raises(jinja2.UndefinedError, match="dispute_by"):
        render("early_reminder", "sms", "zh-CN", ctx)


@pytest.mark.parametrize(
    ("template", "channel", "locale", "fragment"),
    [
        ("no_such_template", "sms", "en", "no_such_template"),
        ("formal_notice", "sms", "en", "formal_notice"),  # exists for email only
        ("early_reminder", "fax", "en", "fax"),
        ("early_reminder", "sms", "fr", "fr"),
        ("early_reminder", "sms", "zh", "zh"),
        ("_opt_out", "sms", "en", "_opt_out"),  # a partial is no template
        ("../en/early_reminder", "sms", "en", "early_reminder"),
    ],
)
def test_unknown_template_channel_or_locale(
    template: str, channel: str, locale: str, fragment: str
) -> None:
    with pytest.raises(UnknownTemplateError, match=re.escape(fragment)) as info:
        render(template, channel, locale, context("early_reminder"))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, jinja2.TemplateNotFound)


def test_locale_is_case_insensitive() -> None:
    ctx = context("early_reminder")
    for spelling in ("zh-cn", "ZH-CN", "zh-CN"):
        assert render("early_reminder", "sms", spelling, ctx) == render(
            "early_reminder", "sms", "zh-CN", ctx
        )
    assert render("early_reminder", "sms", "EN", ctx) == render("early_reminder", "sms", "en", ctx)


def test_known_templates_lists_exactly_the_templates() -> None:
    # The reminders also exist as WeCom messages and voice scripts (issue 17, tests/test_wecom.py
    # and tests/test_voice.py render them); the SMS and e-mail expectations below are these.
    new = {"wecom", "voice"}
    assert {n for n, c in known_templates().items() if new <= c} == {
        "pre_due_reminder", "early_reminder", "firm_reminder", "late_notice"}
    assert {name: channels - new for name, channels in known_templates().items()} == {
        name: channels for name, (channels, _, _) in EXPECTED.items()}
    assert all(isinstance(v, frozenset) for v in known_templates().values())


def test_every_locale_has_the_same_files() -> None:
    files = {loc: sorted(p.name for p in (TEMPLATE_DIR / loc).glob("*.j2")) for loc in LOCALES}
    assert files["en"] == files["zh-CN"]
    pattern = re.compile(
        r"^(_[a-z_]+(\.(sms|email|wecom|voice))?|[a-z][a-z_]*\.(sms|email|wecom|voice))\.j2$")
    assert all(pattern.match(name) for name in files["en"]), files["en"]


def test_email_templates_start_with_a_subject_line() -> None:
    for locale in LOCALES:
        for path in (TEMPLATE_DIR / locale).glob("[!_]*.email.j2"):
            lines = path.read_text(encoding="utf-8").splitlines()
            assert lines[0].startswith("Subject: "), path
            assert lines[1] == "", path


def test_no_template_mentions_third_parties_or_threats() -> None:
    for path in TEMPLATE_DIR.rglob("*.j2"):
        found = FORBIDDEN.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.relative_to(TEMPLATE_DIR)} mentions {found and found[0]!r}"


def test_environment_settings() -> None:
    assert ENV.undefined is jinja2.StrictUndefined
    assert ENV.autoescape is False
    assert ENV.trim_blocks and ENV.lstrip_blocks
    assert ENV.keep_trailing_newline is False


def test_values_are_not_html_escaped() -> None:
    ctx = context("early_reminder", borrower_name="O'Brien & <Co>")
    msg = render("early_reminder", "email", "en", ctx)
    assert "O'Brien & <Co>" in msg.body
