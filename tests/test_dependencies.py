"""The architecture's arrows, checked on the import statements of every module.

``cli`` -> everything; ``validate`` -> ``kernels``, ``sim``; ``reports`` read results as data
(``sim``'s schemas, never its fitting); ``sim`` imports neither torch, ``reports`` nor ``cli``;
the kernel ops import nothing of the project; ``common`` imports nothing of the project, and
every package may import it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "sim", "kernels", "validate", "reports", "cli")

#: What each package may import from stalesim, besides itself.
ALLOWED = {
    "common": set(),
    "sim": {"common"},
    "kernels": set(),
    "validate": {"common", "sim", "kernels"},
    "reports": {"common", "sim"},
    "cli": set(PACKAGES),
}

#: Modules of ``sim`` a page must not import: reports render results, they never fit or simulate.
FITTING = ("stalesim.sim.law.fit", "stalesim.sim.law.intervals", "stalesim.sim.run")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


@pytest.mark.parametrize(("package", "path"), list(_modules()), ids=lambda v: str(v))
def test_imports_flow_one_way(package: str, path: Path) -> None:
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "stalesim" and len(parts) > 1:
            target = parts[1]
            assert target == package or target in ALLOWED[package], (
                f"{path.relative_to(ROOT)} imports {name}"
            )
        if package in ("sim", "common", "reports"):
            assert parts[0] not in ("torch", "triton"), f"{path.relative_to(ROOT)} imports {name}"
        if package == "reports":
            assert not name.startswith(FITTING), f"{path.relative_to(ROOT)} imports {name}"


def test_every_package_folder_is_a_package_the_build_ships() -> None:
    """A folder of modules missing from pyproject's package list would install without them."""
    text = (ROOT / "pyproject.toml").read_text()
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            if "data" in rel.parts:
                continue
            dotted = "stalesim." + ".".join(rel.parts)
            assert f'"{dotted}"' in text, f"{dotted} is not in pyproject.toml's packages"


def test_no_script_lives_among_the_committed_results() -> None:
    """Scripts belong in the package or in tools/, where ruff and the import arrows cover them;
    reports/results/ holds evidence (data, READMEs, manifests) only."""
    scripts = sorted(p.relative_to(ROOT) for p in (ROOT / "reports" / "results").rglob("*.py"))
    assert scripts == []
