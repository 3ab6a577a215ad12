"""Mask PII (phone numbers, e-mail addresses, known names) in log output.

Usage::

    from infra import log_masking
    flt = log_masking.install()          # root logger + its handlers, idempotent
    flt.add_secret(case.borrower_name)   # or log_masking.add_secret(...)

The filter renders each record (``record.getMessage()``), masks it, stores the
result in ``record.msg`` and clears ``record.args`` so that no handler/formatter
can re-render the raw arguments.  Exception and stack text are masked too.

Note: a filter attached to a *logger* only sees records logged on exactly that
logger, whereas a filter attached to a *handler* sees everything the handler
emits, including records propagated from child loggers (``temporalio.workflow``,
``activities.*``...).  ``install()`` therefore attaches to both, but handlers
added after ``install()`` need another ``install()`` call.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable

__all__ = [
    "EMAIL_MASK",
    "NUMBER_MASK",
    "PHONE_MASK",
    "SECRET_MASK",
    "PiiMaskingFilter",
    "add_secret",
    "get_filter",
    "install",
    "mask_text",
    "uninstall",
]

PHONE_MASK = "<phone>"
EMAIL_MASK = "<email>"
NUMBER_MASK = "<number>"
SECRET_MASK = "<redacted>"

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PHONE_RE = re.compile(r"\+\d[\d\s-]{6,}\d")
_DIGITS_RE = re.compile(r"\d{8,}")

MIN_SECRET_LEN = 2  # e.g. a two-character CJK name; shorter strings would shred logs


def _secrets_regex(secrets: Iterable[str]) -> re.Pattern[str] | None:
    items = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first
    if not items:
        return None
    return re.compile("|".join(re.escape(s) for s in items), re.IGNORECASE)


def _mask(text: str, secrets_re: re.Pattern[str] | None) -> str:
    if secrets_re is not None:
        text = secrets_re.sub(SECRET_MASK, text)
    text = _EMAIL_RE.sub(EMAIL_MASK, text)
    text = _PHONE_RE.sub(PHONE_MASK, text)
    text = _DIGITS_RE.sub(NUMBER_MASK, text)
    return text


def mask_text(s: str, secrets: Iterable[str] = ()) -> str:
    """Return ``s`` with e-mails, phone numbers, 8+ digit runs and ``secrets`` masked.

    Secrets are matched literally and case-insensitively.
    """
    norm = [t.strip() for t in secrets if t and len(t.strip()) >= MIN_SECRET_LEN]
    return _mask(s, _secrets_regex(norm))


class PiiMaskingFilter(logging.Filter):
    """Logging filter that rewrites records with PII masked (never drops a record)."""

    def __init__(self, name: str = "", *, max_secrets: int = 10_000) -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._secrets: OrderedDict[str, None] = OrderedDict()
        self._max_secrets = max_secrets
        self._secrets_re: re.Pattern[str] | None = None

    # -- registry of literal secrets (borrower names, addresses, ...) ---------
    def add_secret(self, text: str | None) -> None:
        """Mask ``text`` (case-insensitively) in all future records.

        Strings shorter than 2 characters are ignored.  At most ``max_secrets``
        are kept (oldest evicted first) to bound memory in long-lived workers.
        """
        if not text:
            return
        text = text.strip()
        if len(text) < MIN_SECRET_LEN:
            return
        key = text.casefold()
        with self._lock:
            if key in self._secrets:
                self._secrets.move_to_end(key)
                return
            self._secrets[key] = None
            while len(self._secrets) > self._max_secrets:
                self._secrets.popitem(last=False)
            self._secrets_re = _secrets_regex(self._secrets)

    def remove_secret(self, text: str) -> None:
        key = text.strip().casefold()
        with self._lock:
            if self._secrets.pop(key, 0) is None:
                self._secrets_re = _secrets_regex(self._secrets)

    def clear_secrets(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._secrets_re = None

    def mask(self, text: str) -> str:
        return _mask(text, self._secrets_re)

    # -- logging.Filter ------------------------------------------------------
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # let the handler report the broken format call
            return True
        record.msg = self.mask(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


_FILTER = PiiMaskingFilter()
_install_lock = threading.Lock()


def get_filter() -> PiiMaskingFilter:
    """The process-wide filter used by :func:`install`."""
    return _FILTER


def add_secret(text: str | None) -> None:
    """Register a literal string on the process-wide filter."""
    _FILTER.add_secret(text)


def install(logger: logging.Logger | None = None) -> PiiMaskingFilter:
    """Attach the process-wide filter to ``logger`` (default root), its handlers
    and the root logger's handlers.  Idempotent; returns the filter."""
    root = logging.getLogger()
    target = logger or root
    with _install_lock:
        for obj in (target, *root.handlers, *target.handlers):
            if _FILTER not in obj.filters:
                obj.addFilter(_FILTER)
    return _FILTER


def uninstall(logger: logging.Logger | None = None) -> None:
    """Detach the process-wide filter from what :func:`install` attached it to."""
    root = logging.getLogger()
    target = logger or root
    with _install_lock:
        for obj in (target, *root.handlers, *target.handlers):
            obj.removeFilter(_FILTER)
