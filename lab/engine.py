"""The lab's engine as the surfaces see it. It lives in the service layer (service/lab_engine.py)
because it drives the case code (workflows/), which a surface may not import (see
tests/test_layering.py).
"""

from service.lab_engine import HORIZON_DAYS, resolve_for, run_book, run_case

__all__ = ["HORIZON_DAYS", "resolve_for", "run_book", "run_case"]
