"""No code outside ``sim/modes/`` compares mode names: it reads a mode's flags or asks its
admission policy, so that a new mode is its module, a registry line and its tests.

Every module's syntax tree is searched for a comparison (``==``, ``!=``, ``in``, ``not in``)
with a registered mode's name as a string literal, alone or inside a tuple, list or set.
"""

import ast
from pathlib import Path

from stalesim.sim.modes import MODES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "sim", "kernels", "validate", "reports", "cli")
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _names(node: ast.expr) -> list[str]:
    """The mode names a comparison operand spells out."""
    if isinstance(node, ast.Constant) and node.value in MODES:
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [n for elt in node.elts for n in _names(elt)]
    return []


def mode_name_comparisons(source: str) -> list[str]:
    """``line: names`` for each comparison of ``source`` against a mode name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, COMPARISONS) for op in node.ops):
            names = [n for operand in (node.left, *node.comparators) for n in _names(operand)]
            if names:
                found.append(f"{node.lineno}: {', '.join(names)}")
    return found


def test_the_search_finds_what_it_looks_for() -> None:
    source = (
        'if mode == "async":\n    pass\n'
        'x = algo.mode in ("sync", "one_step")\n'
        'y = "partial_rollout" != m\n'
        'z = kind == "sync_weights"\n'  # not a mode name
    )
    assert mode_name_comparisons(source) == ["1: async", "3: sync, one_step", "4: partial_rollout"]


def test_no_module_outside_the_modes_compares_mode_names() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("sim", "modes"):
                continue
            offenders += [f"{rel}:{hit}" for hit in mode_name_comparisons(path.read_text())]
    assert offenders == []
