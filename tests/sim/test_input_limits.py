"""Bad input to simulate and plan that used to be accepted, hang or raise: each is refused in
one line naming the input, with exit code 2, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from stalesim.cli import main


def _refused(args: list[str], needle: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range x>=0"),
        (["--set", "model.active_params=1e12"], "active_params=1e+12 exceeds params=7.61e+09"),
        (["--set", "model.params=1e9", "--set", "model.active_params=2e9"], "exceeds params=1e+09"),
        (["--preset", ""], "--preset '': unknown preset"),
        (["--vary", "a=1", "--sensitivity"], "--vary and --sensitivity: give one of them"),
    ],
)
def test_simulate_refuses(tmp_path: Path, args: list[str], needle: str) -> None:
    _refused(["simulate", *args, "--steps", "2", "--out", str(tmp_path / "out")], needle, tmp_path)


def test_an_empty_out_folder_is_refused_not_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["simulate", "--steps", "2", "--out", ""])
    assert result.exit_code == 2
    assert "Invalid value for '--out': is empty" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_endless_file_is_not_read_to_the_end(tmp_path: Path) -> None:
    _refused(
        ["simulate", "/dev/zero", "--out", str(tmp_path / "out")], "larger than 16 MiB", tmp_path
    )


@pytest.mark.parametrize(
    ("plan", "args", "needle"),
    [
        ("evaluation:\n  seed: -1\n", [], "evaluation.seed=-1"),
        ("evaluation:\n  steps: 1000000000\n", [], "evaluation.steps=1000000000: the largest"),
        (
            "space:\n  learner_gpus: {from: 1, to: 5000}\n  prompts_per_step: {from: 1, to: 5000}\n",
            [],
            "names 25,000,000 candidates (learner_gpus 5000 x prompts_per_step 5000)",
        ),
        ("space:\n  learner_gpus: {from: 1, to: .inf}\n", [], "a range needs finite numbers"),
        ("", ["--ray", ""], "--ray '': give a Ray address"),
    ],
)
def test_plan_refuses(tmp_path: Path, plan: str, args: list[str], needle: str) -> None:
    file = tmp_path / "plan.yaml"
    file.write_text(plan)
    _refused(["plan", str(file), *args, "--out", str(tmp_path / "out")], needle, tmp_path)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_an_empirical_length_file_with_non_finite_values_is_refused(
    tmp_path: Path, bad: str
) -> None:
    lengths = tmp_path / "lengths.csv"
    lengths.write_text(f"tokens\n100\n{bad}\n300\n")
    spec = f"workload.response_tokens={{kind: empirical, path: {lengths}, column: tokens}}"
    _refused(
        ["simulate", "--set", spec, "--steps", "2", "--out", str(tmp_path / "out")],
        "has 1 NaN or infinite value(s) (the first at value 2)",
        tmp_path,
    )
