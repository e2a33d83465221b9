"""``stalesim bench gpu`` without a GPU: one line, exit code 2; its training run is gpu-small's."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.cli.bench_gpu import NEEDS_CUDA, gpu_small_check_run
from stalesim.kernels import _bench_cases as cases
from stalesim.validate.train.presets import preset_sweep


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
@pytest.mark.parametrize("args", [[], ["--out", "somewhere", "--train-steps", "3"]])
def test_without_cuda_it_exits_2_with_one_line(tmp_path, monkeypatch, args) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["bench", "gpu", *args])
    assert result.exit_code == 2
    assert result.output == f"error: {NEEDS_CUDA}\n"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_training_part_is_gpu_small_through_the_kernels() -> None:
    run = gpu_small_check_run(7, device="cpu")
    preset = preset_sweep("gpu-small").train
    assert run.train.steps == 7 and run.train.backend == "triton"
    assert run.train.task == preset.task and run.train.task.vocab_size == 32_768
    assert run.train.policy == preset.policy and run.train.grpo == preset.grpo
    assert run.lr in preset_sweep("gpu-small").grids[0].lrs


def test_real_shape_checks_cover_the_fused_backward_chunks() -> None:
    """The fused real-shape check's backward walks several row chunks and slabs."""
    from stalesim.kernels.fused_linear import backward_plan

    assert len(cases.real_shape_correctness_cases(torch.device("cpu"))) == 4
    plan = backward_plan(2048, 1024, 32_768, 2, 128)
    assert -(-2048 // plan.chunk_rows) == 8 and -(-32_768 // plan.slab_columns) == 13
