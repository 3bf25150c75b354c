"""Architecture rules of the backend seam (DESIGN §11), checked on the source as data."""

from __future__ import annotations

import ast
from pathlib import Path

from service.settings import PROVIDERS

REPO = Path(__file__).resolve().parents[1]
# The one place that maps provider names to backends, and the settings' list of valid names.
NAME_OWNERS = {"service/core/backends/registry.py", "service/settings.py"}
# Not a job's provider: the dev stack's demo switch (TUNELINE_DEMO=local runs the local demo).
NOT_PROVIDERS = {("service/devstack.py", "os.environ.get('TUNELINE_DEMO') == 'local'")}


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(REPO)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted((REPO / "service").rglob("*.py"))
    ]


def _names_in(node: ast.expr) -> list[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [e.value for e in items if isinstance(e, ast.Constant) and e.value in PROVIDERS]


def test_no_provider_name_is_compared_outside_the_registry():
    offenders = []
    for name, tree in _sources():
        if name in NAME_OWNERS:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            text = ast.unparse(node)
            compared = [n for operand in (node.left, *node.comparators) for n in _names_in(operand)]
            if (compared or ".NAME" in text) and (name, text) not in NOT_PROVIDERS:
                offenders.append(f"{name}:{node.lineno}: {text}")
    assert offenders == []


def test_the_rule_catches_a_provider_branch():
    tree = ast.parse('if job["provider"] == "local":\n    pass\nok = provider in ("openai", "azure")\n')
    hits = [
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare) and any(_names_in(o) for o in (n.left, *n.comparators))
    ]
    assert len(hits) == 2


def test_stages_share_helpers_through_one_module_only():
    """No module imports a private name (``_x``) from another module of the job pipeline."""
    offenders = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("service.core.jobs", "service.core.backends")
            ):
                offenders += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []
