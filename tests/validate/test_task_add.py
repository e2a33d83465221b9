"""The addition task: its binary exact-match reward on hand-made answers, its answers against
integer arithmetic, its prompt layout, and the task registry's configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from stalesim.common.config_file import ConfigError, validate_config
from stalesim.validate.law.sweep import run_sweep
from stalesim.validate.train.presets import SweepConfig, TrainConfig, preset_sweep
from stalesim.validate.train.run_memory import policy_params
from stalesim.validate.train.task_configs import AddTaskConfig, SortTaskConfig, task_config
from stalesim.validate.train.tasks import AddTask
from stalesim.validate.train.trainer import run_id
from stalesim.validate.train.warm_start import config_hash, corrupted_demonstrations

TASK = AddTask(AddTaskConfig(kind="add", n_digits=3, base=10))
E, P = TASK.eos_id, TASK.pad_id
# 321 + 789 = 1110, every number written least significant digit first
DIGITS = torch.tensor([[1, 2, 3, 9, 8, 7]])


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ([0, 1, 1, 1, E], 1.0),  # the whole sum
        ([0, 1, 1, 2, E], 0.0),  # one wrong digit: no partial credit
        ([0, 1, 1, E, P], 0.0),  # a digit missing
        ([0, 1, 1, 1, 0], 0.0),  # no end token
        ([0, 1, 1, 1, 0, E], 0.0),  # a digit too many
        ([0, 1, 1, 1, E, 7], 1.0),  # tokens after the end token do not count
        ([0, 1, 1], 0.0),  # shorter than the answer
        ([1, 1, 1, 0, E], 0.0),  # most significant digit first is wrong
    ],
)
def test_reward_is_one_only_for_the_exact_sum(response: list[int], expected: float) -> None:
    assert TASK.rewards(DIGITS, torch.tensor([response])).item() == expected


@pytest.mark.parametrize(("n_digits", "base"), [(3, 10), (5, 7), (2, 2)])
def test_answers_are_the_integer_sums(n_digits: int, base: int) -> None:
    task = AddTask(AddTaskConfig(kind="add", n_digits=n_digits, base=base))
    digits = task.sample_digits(200, torch.Generator().manual_seed(n_digits))

    def value(ds: list[int]) -> int:  # least significant digit first
        return sum(d * base**i for i, d in enumerate(ds))

    for row, answer in zip(digits.tolist(), task.answers(digits).tolist(), strict=True):
        assert value(answer) == value(row[:n_digits]) + value(row[n_digits:])
        assert len(answer) == n_digits + 1 and all(0 <= d < base for d in answer)
    solutions = task.solutions(digits)
    assert torch.all(task.rewards(digits, solutions) == 1.0)
    noise = torch.randint(0, task.vocab_size, solutions.shape, generator=torch.Generator())
    assert set(task.rewards(digits, noise).unique().tolist()) <= {0.0, 1.0}


def test_prompt_layout_and_its_pure_python_twin() -> None:
    prompts = TASK.prompts(DIGITS)
    plus, sep = TASK.plus_id, TASK.sep_id
    assert prompts.tolist() == [[1, 2, 3, plus, 9, 8, 7, sep]]
    assert prompts.shape[1] == TASK.prompt_len == 8
    config = TASK.config
    assert config.prompt_of(DIGITS[0].tolist()) == prompts[0].tolist()
    assert config.digits_of(prompts[0].tolist()) == DIGITS[0].tolist()
    assert TASK.max_response_len == config.response_len == 5
    assert TASK.vocab_size == 14  # ten digits, separator, end, padding, plus


def test_warm_start_mistakes_stay_among_the_answer_digits() -> None:
    generator = torch.Generator().manual_seed(3)
    digits = TASK.sample_digits(500, generator)
    demos = corrupted_demonstrations(
        TASK, digits, TrainConfig().warm_start.model_copy(update={"corrupt_prob": 1.0}), generator
    )
    assert torch.all(demos[:, -1] == E)
    assert torch.all(demos[:, :-1] < 10)
    passed = TASK.rewards(digits, demos)
    # every demonstration had a mistake; a swap of two equal digits or a replacement by the
    # same digit leaves it right, which happens for a minority
    assert 0.0 < passed.mean() < 0.3


def test_task_kinds_are_told_apart_and_a_sort_config_hashes_as_before() -> None:
    add = validate_config(TrainConfig, {"task": {"kind": "add", "n_digits": 4}})
    assert isinstance(add.task, AddTaskConfig)
    assert add.model_dump(mode="json")["task"]["kind"] == "add"
    sort = validate_config(TrainConfig, {"task": {"n_digits": 4}})
    assert isinstance(sort.task, SortTaskConfig)
    # a sort task dumps without its kind: run ids and warm-start caches of every sweep
    # committed before kinds existed stay valid
    assert sort.model_dump(mode="json")["task"] == {"n_digits": 4, "base": 10, "vocab_size": None}
    assert config_hash(sort.task) == config_hash_of({"n_digits": 4, "base": 10, "vocab_size": None})
    assert validate_config(TrainConfig, {"task": {"kind": "sort"}}).task == SortTaskConfig()
    assert task_config({"kind": "add", "n_digits": 4}).label == "add two 4-digit base-10 numbers"
    assert task_config({"n_digits": 12, "base": 16}).label == "sort 12 digits of base 16"
    with pytest.raises(
        ConfigError, match=r"task=\{'kind': 'mul'\}: kind must be one of: sort, add$"
    ):
        validate_config(TrainConfig, {"task": {"kind": "mul"}})
    with pytest.raises(ConfigError, match=r"vocab_size=13: must be at least base \+ 4 = 14"):
        validate_config(TrainConfig, {"task": {"kind": "add", "vocab_size": 13}})


def config_hash_of(data: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([data], sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("preset", "first_id"),
    [
        ("cpu-tiny", "4448e5552f037a65"),
        ("law-clip", "d5f5e5b68ae1d2b0"),
        ("law-horizon-ns", "3ae8c1471b5511e7"),
        ("gpu-small", "9045c3b793d7a31e"),
    ],
)
def test_sort_runs_keep_the_ids_they_had_before_tasks_had_kinds(preset: str, first_id: str) -> None:
    """Run ids computed before the task registry existed: a resumed sweep finds its runs."""
    assert run_id(preset_sweep(preset).runs()[0]) == first_id


def test_memory_estimate_reads_the_task_shape() -> None:
    sort = validate_config(TrainConfig, {"task": {"n_digits": 6}})
    add = validate_config(TrainConfig, {"task": {"kind": "add", "n_digits": 6}})
    e = sort.policy.n_embd
    # the add task has one more token (the plus) and 8 more positions (6 more digits and the
    # plus in the prompt, one more answer digit): the embedding tables grow by 2 x 1 + 8 rows
    assert policy_params(add) - policy_params(sort) == (2 * 1 + 8) * e


@pytest.fixture
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALESIM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.usefixtures("_cache")
def test_the_task2_preset_shrunk_trains_with_binary_rewards(tmp_path: Path) -> None:
    config = preset_sweep("law-task2")
    assert isinstance(config.train.task, AddTaskConfig)
    runs = config.runs()
    assert {r.staleness for r in runs} == {f"fixed:{s}" for s in (0, 2, 4, 8, 16)}
    assert len({r.seed for r in runs}) >= 4
    assert config.train.steps >= 5 * 16
    train = config.train.model_dump(mode="json") | {
        "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
        "warm_start": {"steps": 5, "batch_size": 16, "per_run_seed": True},
        "steps": 4,
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "smoothing_window": 2,
    }
    small = validate_config(
        SweepConfig,
        {
            "preset": "law-task2-cpu",
            "train": train,
            "grids": [{"lrs": [1e-3], "staleness": ["0", "2"], "seeds": [0]}],
        },
    )
    table, steps = run_sweep(small, tmp_path / "runs", workers=1)
    assert table.height == 2 and steps.height == 2 * 4
    # each step's reward is a count of exact answers among its 16 samples
    counts = steps["reward_mean"] * 16
    assert ((counts - counts.round()).abs() < 1e-6).all()
    assert (steps["reward_mean"].is_between(0, 1)).all()
