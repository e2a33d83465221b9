"""Experiment manifests: every file's size and SHA-256, checked byte for byte; a tampered,
added or missing file fails ``--check`` with one line naming it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.reports.manifest import owned_files, readme_commands, readme_machine

from tests.evidence import RESULTS

README = """# A sweep

* **Command**: `stalesim validate sweep --preset cpu-tiny --out runs/a --workers 2`, then
  `stalesim fit runs/a`
* **Date**: 2026-11-25, code at commit `8c142e9`
* **Machine**: 2 vCPU, no GPU
"""


def _tree(root: Path) -> Path:
    """A results folder: an experiment with a subfolder and a nested experiment, an index
    folder over a second experiment, and generated files that are not evidence."""
    exp = root / "exp"
    (exp / "sub").mkdir(parents=True)
    (exp / "README.md").write_text(README)
    (exp / "runs.csv").write_text("lr,reward\n0.001,0.5\n")
    (exp / "sub" / "law.json").write_text('{"eta0": 0.001}')
    (exp / "report.html").write_text("<html>generated</html>")
    (exp / "shards").mkdir()
    (exp / "shards" / "run-0.parquet").write_bytes(b"working file")
    (exp / "nested").mkdir()
    (exp / "nested" / "README.md").write_text("# Nested\n\n```bash\nstalesim fit x --out y\n```\n")
    (exp / "nested" / "fit.txt").write_text("fitted\n")
    (root / "index" / "exp2").mkdir(parents=True)
    (root / "index" / "README.md").write_text("# Index\n")
    (root / "index" / "exp2" / "README.md").write_text("# Two\n")
    (root / "index" / "exp2" / "data.csv").write_text("a\n1\n")
    (root / "README.md").write_text("# Results\n")
    return root


def _invoke(*args: str):
    return CliRunner().invoke(main, ["report", "manifest", *args])


def test_manifests_list_every_file_with_its_hash_and_check_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "results")
    written = _invoke(str(root))
    assert written.exit_code == 0, written.output
    assert written.output.strip() == f"wrote 3 manifests under {root}"
    # index folders (a README alone) get none
    assert not (root / "manifest.json").exists() and not (root / "index/manifest.json").exists()
    manifest = json.loads((root / "exp" / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["README.md", "runs.csv", "sub/law.json"]
    for entry in manifest["files"]:
        data = (root / "exp" / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["commands"] == [
        "stalesim validate sweep --preset cpu-tiny --out runs/a --workers 2",
        "stalesim fit runs/a",
    ]
    assert (manifest["commit"], manifest["commit_source"]) == ("8c142e9", "README")
    assert (manifest["date"], manifest["machine"]) == ("2026-11-25", "2 vCPU, no GPU")
    nested = json.loads((root / "exp" / "nested" / "manifest.json").read_text())
    assert nested["commands"] == ["stalesim fit x --out y"]
    assert [f["path"] for f in nested["files"]] == ["README.md", "fit.txt"]

    checked = _invoke(str(root), "--check")
    assert checked.exit_code == 0, checked.output
    assert checked.output.strip() == "3 experiment folders match their manifests (7 files)"
    # a regenerated page and working files change nothing
    (root / "exp" / "report.html").write_text("<html>regenerated</html>")
    (root / "exp" / "shards" / "run-1.parquet").write_bytes(b"more")
    assert _invoke(str(root), "--check").exit_code == 0


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda r: (r / "exp/runs.csv").write_text("lr,reward\n0.001,0.6\n"), "SHA-256 differs"),
        (lambda r: (r / "exp/sub/law.json").write_text('{"eta0": 0.01}'), "bytes, manifest.json"),
        (lambda r: (r / "exp/sub/law.json").unlink(), "listed in manifest.json but missing"),
        (lambda r: (r / "exp/sub/extra.csv").write_text("x\n"), "not listed in manifest.json"),
    ],
)
def test_a_tampered_file_fails_the_check_in_one_line_naming_it(
    tmp_path: Path, tamper, message: str
) -> None:
    root = _tree(tmp_path / "results")
    assert _invoke(str(root)).exit_code == 0
    tamper(root)
    result = _invoke(str(root), "--check")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert str(root / "exp") in lines[0]


def test_two_mismatches_are_one_line_counting_the_rest(tmp_path: Path) -> None:
    root = _tree(tmp_path / "results")
    assert _invoke(str(root)).exit_code == 0
    (root / "exp/runs.csv").write_text("changed\n")
    (root / "index/exp2/manifest.json").unlink()
    result = _invoke(str(root), "--check")
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "(1 more mismatch)" in result.output


def test_a_file_no_readme_covers_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root = _tree(tmp_path / "results")
    (root / "README.md").unlink()
    (root / "stray").mkdir()
    (root / "stray" / "table.csv").write_text("a\n")
    result = _invoke(str(root))
    assert result.exit_code == 2
    assert "stray/table.csv: no README.md" in result.output
    assert not list(root.rglob("manifest.json"))


def test_bad_folders_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    missing = _invoke(str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "nowhere: no such directory" in missing.output
    empty = _invoke(str(tmp_path))
    assert empty.exit_code == 2 and "no experiment folder" in empty.output
    # the default is the results folder of the current directory (the repository root)
    monkeypatch.chdir(tmp_path)
    default = _invoke("--check")
    assert default.exit_code == 2 and "reports/results: no such directory" in default.output
    _tree(tmp_path / "reports" / "results")
    assert _invoke().exit_code == 0
    assert _invoke("--check").exit_code == 0


def test_readme_parsing_takes_commands_only_where_the_readme_says_so() -> None:
    text = (
        "Made by `bash run.sh --fast`. See `stalesim fit` for details.\n\n"
        "```bash\nOUT=/x stalesim bench gpu --out /tmp/b   # the bench\n"
        "python3 -m pip download \\\n  --no-deps x\necho not a command\n```\n"
        "The machine was one H200 SXM (143,771 MiB), lent for the day. Then more.\n"
    )
    assert readme_commands(text) == [
        "OUT=/x stalesim bench gpu --out /tmp/b",
        "python3 -m pip download --no-deps x",
        "bash run.sh --fast",
    ]
    made_by = "Made by [`run_all.sh`](run_all.sh) and `stalesim validate pipeline --mode sync`.\n"
    assert readme_commands(made_by, "reports/results/pipeline-cpu") == [
        "bash reports/results/pipeline-cpu/run_all.sh",
        "stalesim validate pipeline --mode sync",
    ]
    assert readme_machine(text) == "one H200 SXM (143,771 MiB), lent for the day"
    assert readme_machine("# A\n\n* **Wall time**: 133 s on the shared 2-vCPU VM\n") == (
        "Wall time: 133 s on the shared 2-vCPU VM"
    )
    assert readme_machine("# A\n\nNo word about where.\n") is None


def test_the_committed_evidence_matches_its_manifests() -> None:
    """Every committed experiment folder has a manifest, and its files are the ones listed."""
    folders = owned_files(RESULTS)
    assert len(folders) >= 20
    result = _invoke(str(RESULTS), "--check")
    assert result.exit_code == 0, result.output


def test_a_folder_s_commit_is_the_last_that_wrote_its_own_data(tmp_path: Path) -> None:
    """A nested experiment's later commit, or a README edit, does not move the commit of the
    folder above it: its manifest names the commit that last wrote the files it owns."""
    import subprocess

    root = _tree(tmp_path / "results")
    readme = README.replace(", code at commit `8c142e9`", "")
    (root / "exp" / "README.md").write_text(readme)

    def commit(message: str) -> str:
        git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
        subprocess.run([*git, "commit", "-qm", message], check=True, capture_output=True)
        out = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True)
        return out.stdout.decode().strip()

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    first = commit("data")
    (root / "exp" / "nested" / "fit.txt").write_text("refitted\n")
    (root / "exp" / "README.md").write_text(readme.replace("2 vCPU", "two vCPUs"))
    second = commit("nested refit, README edit")
    assert _invoke(str(root)).exit_code == 0
    assert json.loads((root / "exp" / "manifest.json").read_text())["commit"] == first
    assert json.loads((root / "exp" / "nested" / "manifest.json").read_text())["commit"] == second
