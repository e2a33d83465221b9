"""The root group's promise: bad input and a missing optional extra are one line, exit code 2."""

import subprocess
import sys
import textwrap


def _run_without_torch(*args: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # makes `import torch` fail as if it were not installed
        sys.modules["triton"] = None
        from stalesim.cli import main
        sys.argv = ["stalesim", *{list(args)!r}]
        main()
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_training_without_torch_is_one_line_exit_2(tmp_path) -> None:
    result = _run_without_torch("validate", "sweep", "--quiet", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: this command needs torch")
    assert "Traceback" not in result.stderr


def test_simulate_runs_without_torch(tmp_path) -> None:
    result = _run_without_torch("simulate", "--quiet", "--steps", "3", "--out", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s" / "summary.json").exists()
