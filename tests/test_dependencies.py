"""The architecture's arrows: validate -> kernels, validate -> sim, reports read result files,
cli -> everything. Checked on the import statements of every module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "kernels", "validate", "reports", "cli")

#: What each package may import from stalesim, besides itself. Command modules (``cli.py``,
#: ``*_cli.py``, ``bench.py``) belong to the command line, which may import everything.
ALLOWED = {
    "sim": set(),
    "kernels": set(),
    "validate": {"sim", "kernels"},
    # reports read results as data; page.py writes through sim.files and pages take sim.law's
    # Law as the schema of law.json
    "reports": {"sim"},
    "cli": set(PACKAGES),
}
COMMAND_MODULES = ("cli.py", "bench.py")


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
        for path in sorted((ROOT / package).glob("*.py")):
            yield package, path


@pytest.mark.parametrize(("package", "path"), list(_modules()), ids=lambda v: str(v))
def test_imports_flow_one_way(package: str, path: Path) -> None:
    if path.name in COMMAND_MODULES or path.name.endswith("_cli.py"):
        return
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "stalesim" and len(parts) > 1:
            target = parts[1]
            assert target == package or target in ALLOWED[package], (
                f"{path.relative_to(ROOT)} imports {name}"
            )
        if package == "sim":
            assert parts[0] not in ("torch", "triton"), f"{path.relative_to(ROOT)} imports {name}"


#: Command modules still inside ``sim/`` (none: every command lives in ``cli/``).
SIM_COMMAND_EXCEPTIONS: set[str] = set()


def test_the_simulator_never_imports_pages_or_the_command_line() -> None:
    offenders = []
    for path in sorted((ROOT / "sim").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in SIM_COMMAND_EXCEPTIONS:
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "stalesim" and len(parts) > 1 and parts[1] in ("reports", "cli"):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []
