"""Training and sweep configs, and the built-in presets ``cpu-tiny`` and ``gpu-small``.

``cpu-tiny`` is sized so that a full learning-rate x staleness x seed sweep finishes on a
2-core machine in under 20 minutes; ``gpu-small`` is the same code with a model and task large
enough to keep one GPU busy, and a 32,768-token vocabulary (most of it unused by the task) so
the fused log-prob kernel runs at real vocabulary sizes.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator
from stalesim.common.config_file import ConfigError, StrictModel, validate_config
from stalesim.kernels.options import GRPOOptions, option_names
from stalesim.validate.train.collapse import CollapseConfig
from stalesim.validate.train.optimizers import OptimizerConfig
from stalesim.validate.train.policy import PolicyConfig
from stalesim.validate.train.staleness import parse_staleness
from stalesim.validate.train.staleness_lr import LRRuleConfig
from stalesim.validate.train.task_configs import SortTaskConfig, TaskConfig
from stalesim.validate.train.warm_start import WarmStartConfig

TRAINING_LOSS_DEFAULTS: dict[str, Any] = {"eps_high": 0.28}
"""Where training's defaults differ from :class:`GRPOOptions`' own: DAPO's clip-higher."""


class _GRPOConfigBase(StrictModel):
    """The GRPO objective of a training run: every field of
    :class:`stalesim.kernels.options.GRPOOptions` (generated from it, so the list of options is
    written once), plus how rewards become advantages."""

    advantage_scale: Literal["group", "batch", "none"] = "group"

    @model_validator(mode="after")
    def _valid_loss_options(self) -> _GRPOConfigBase:
        options = self.loss_options()  # raises ValueError naming the option
        if options.beta > 0:
            raise ValueError(
                f"beta={options.beta}: the trainer keeps no reference policy, so only beta=0 "
                "(no KL penalty) is supported"
            )
        return self

    def loss_options(self) -> GRPOOptions:
        """The options ``stalesim.kernels.grpo_loss`` takes."""
        return GRPOOptions(**{name: getattr(self, name) for name in option_names()})


def _loss_option_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(GRPOOptions)
    return {
        field.name: (hints[field.name], TRAINING_LOSS_DEFAULTS.get(field.name, field.default))
        for field in dataclasses.fields(GRPOOptions)
    }


GRPOConfig = create_model(
    "GRPOConfig", __base__=_GRPOConfigBase, __module__=__name__, **_loss_option_fields()
)


class TrainConfig(StrictModel):
    """Everything a training run needs except its learning rate, staleness and seed."""

    task: TaskConfig = SortTaskConfig()
    policy: PolicyConfig = PolicyConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    grpo: GRPOConfig = GRPOConfig()
    collapse: CollapseConfig = CollapseConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    lr_rule: LRRuleConfig = LRRuleConfig()
    steps: int = Field(150, ge=1, le=1_000_000, description="learner steps per run")
    prompts_per_step: int = Field(32, ge=1, le=1_000_000, description="groups per learner step (B)")
    samples_per_prompt: int = Field(8, ge=2, le=4096, description="responses per group (G)")
    minibatches_per_step: int = Field(
        1, ge=1, le=1_000_000, description="optimizer steps (versions) per learner step"
    )
    temperature: float = Field(1.0, ge=0.01, le=100)
    warmup_steps: int = Field(
        10, ge=0, le=1_000_000, description="linear LR warm-up, in optimizer steps"
    )
    weight_decay: float = Field(0.0, ge=0, le=10)
    grad_clip: float | None = Field(
        None, gt=0, le=1e6, description="max gradient norm; None: no clipping (it hides LR effects)"
    )
    target_reward: float = Field(0.9, gt=0, le=1)
    smoothing_window: int = Field(
        10, ge=1, le=1_000_000, description="steps in the smoothed reward"
    )
    eval_prompts: int = Field(
        128,
        ge=1,
        le=1_000_000,
        description="fresh prompts (x samples_per_prompt) scoring the warm start",
    )
    device: str = "cpu"
    backend: Literal["auto", "triton", "reference"] = "auto"

    @field_validator("minibatches_per_step")
    @classmethod
    def _divides_batch(cls, value: int, info) -> int:
        groups = info.data.get("prompts_per_step")
        if groups is not None and groups % value:
            raise ValueError(f"must divide prompts_per_step={groups}")
        return value


class RunConfig(StrictModel):
    """One training run: a train config, a peak learning rate, a staleness spec, a seed."""

    preset: str
    train: TrainConfig
    lr: float = Field(gt=0, le=10)
    staleness: str
    seed: int = Field(ge=0, lt=2**32)

    @field_validator("staleness")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return parse_staleness(value).text


class Grid(StrictModel):
    """Every learning rate x staleness spec x seed."""

    lrs: list[float] = Field(min_length=1)
    staleness: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)

    @field_validator("lrs")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not 0 < lr <= 10 for lr in value):
            raise ValueError("learning rates must be > 0 and <= 10")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if any(not 0 <= seed < 2**32 for seed in value):
            raise ValueError("seeds must be whole numbers in 0..4294967295")
        return value

    @field_validator("staleness")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        return [parse_staleness(v).text for v in value]


class SweepConfig(StrictModel):
    """One train config and the grids of runs made with it."""

    preset: str
    train: TrainConfig
    grids: list[Grid] = Field(min_length=1)

    def runs(self) -> list[RunConfig]:
        """Every run of every grid once, seed-major so early runs cover every S and LR."""
        unique: dict[tuple, RunConfig] = {}
        for grid in self.grids:
            for seed in grid.seeds:
                for spec in grid.staleness:
                    for lr in grid.lrs:
                        unique.setdefault(
                            (lr, spec, seed),
                            RunConfig(
                                preset=self.preset,
                                train=self.train,
                                lr=lr,
                                staleness=spec,
                                seed=seed,
                            ),
                        )
        return list(unique.values())


_FIXED_S = ["0", "1", "2", "4", "8", "16", "32"]

PRESETS: dict[str, dict] = {
    # Fixed staleness over a wide LR range; staleness distributions (both with max 32, means
    # about 16 and 8) over the LRs around the optima, to tell which summary of S predicts.
    "cpu-tiny": {
        "preset": "cpu-tiny",
        "train": {
            "task": {"n_digits": 6, "base": 10},
            "policy": {"n_layer": 2, "n_head": 4, "n_embd": 64},
            "warm_start": {"steps": 100, "corrupt_prob": 0.9, "max_mistakes": 3},
            "steps": 150,
            "prompts_per_step": 32,
            "samples_per_prompt": 8,
            "target_reward": 0.85,
            "device": "cpu",
        },
        "grids": [
            {
                "lrs": [2e-4, 4e-4, 7e-4, 1.2e-3, 2.2e-3, 4e-3, 8e-3],
                "staleness": _FIXED_S,
                "seeds": [0, 1],
            },
            {
                "lrs": [2e-4, 4e-4, 7e-4, 1.2e-3, 2.2e-3],
                "staleness": ["uniform:0-32", "geometric:p=0.1,max=32"],
                "seeds": [0, 1],
            },
        ],
    },
    # cpu-tiny with 4 optimizer steps (mini-batches of 8 groups) per learner step: more updates
    # per sample, as in PPO-style training; staleness counts versions, so mini-batch m of a
    # step adds m to its lag. LRs shifted down where this setting's optima sit.
    "cpu-tiny-mb4": {
        "preset": "cpu-tiny-mb4",
        "train": {
            "task": {"n_digits": 6, "base": 10},
            "policy": {"n_layer": 2, "n_head": 4, "n_embd": 64},
            "warm_start": {"steps": 100, "corrupt_prob": 0.9, "max_mistakes": 3},
            "steps": 150,
            "prompts_per_step": 32,
            "samples_per_prompt": 8,
            "minibatches_per_step": 4,
            "target_reward": 0.85,
            "device": "cpu",
        },
        "grids": [
            {
                "lrs": [5e-5, 1e-4, 2e-4, 3.5e-4, 6e-4, 1.2e-3, 2.2e-3, 4e-3],
                "staleness": _FIXED_S,
                "seeds": [0, 1],
            },
        ],
    },
    "gpu-small": {
        "preset": "gpu-small",
        "train": {
            # 32,768 tokens, of which the task uses 19: the learner's log-probs run the fused
            # kernel at an LLM-like vocabulary (N = 13,312 tokens per step, H = 256).
            "task": {"n_digits": 12, "base": 16, "vocab_size": 32_768},
            "policy": {"n_layer": 6, "n_head": 8, "n_embd": 256},
            "warm_start": {"steps": 400, "batch_size": 256, "corrupt_prob": 0.9, "max_mistakes": 4},
            "steps": 300,
            "prompts_per_step": 64,
            "samples_per_prompt": 16,
            "target_reward": 0.85,
            "device": "cuda",
        },
        "grids": [
            {
                "lrs": [1e-4, 2e-4, 3e-4, 5e-4, 8e-4, 1.2e-3, 2e-3, 4e-3],
                "staleness": _FIXED_S,
                "seeds": [0, 1, 2],
            },
            {
                "lrs": [2e-4, 3e-4, 5e-4, 8e-4, 1.2e-3],
                "staleness": ["uniform:0-32", "geometric:p=0.1,max=32"],
                "seeds": [0, 1, 2],
            },
        ],
    },
}


# ---- The law experiments ----------------------------------------------------------------
# One base: sort 6 digits, 2x64 policy, 16 prompts x 8 samples per step, every seed with its own
# warm start. The grids are small (a run takes 8-70 s on the 2-core machine they ran on, with
# or without other work): 4-5 learning rates, 2x apart, with sqrt(2) steps at the stability
# edge (placed after the first seed's runs showed it); S in {0, 1, 2, 4, 8, 16, 32} for the
# objectives, {0, 4, 16, 32} for the batch sizes, {0, 32} for the optimizers (each differs from
# "law-decoupled" in one setting). Every run is 160 steps, 5 x the largest S.

_LAW_BASE: dict = {
    "task": {"n_digits": 6, "base": 10},
    "policy": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    "warm_start": {"steps": 100, "corrupt_prob": 0.9, "max_mistakes": 3, "per_run_seed": True},
    "steps": 160,
    "prompts_per_step": 16,
    "samples_per_prompt": 8,
    "target_reward": 0.85,
    "device": "cpu",
}
_DECOUPLED = {"is_cap": 2.0}
_SEEDS = [0, 1, 2]
_LAW_LRS = [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]
_ADAM_SHORT_LRS = [5e-4, 1e-3, 2e-3, 4e-3]
_HUB_S = ["0", "32"]
_ALL_S = ["0", "1", "2", "4", "8", "16", "32"]
_BATCH_S = ["0", "4", "16", "32"]


def _law_preset(name: str, grids: list[dict], **train: object) -> dict:
    merged = {**_LAW_BASE, **train}
    return {"preset": name, "train": merged, "grids": grids}


def _hub_preset(
    name: str,
    lrs: list[float],
    staleness: list[str] = _HUB_S,
    edges: tuple[tuple[list[float], list[str]], ...] = (),
    **train: object,
) -> dict:
    """(b) and (c): the decoupled objective, 160-step runs; each differs from
    ``law-decoupled`` (16 prompts, AdamW beta1 0.9) in one setting. ``edges``: (LRs, S) grids
    added at the stability edge once the first runs showed it."""
    grids = [{"lrs": lrs, "staleness": staleness, "seeds": _SEEDS}]
    grids += [{"lrs": e_lrs, "staleness": e_s, "seeds": _SEEDS} for e_lrs, e_s in edges]
    return _law_preset(name, grids, grpo=_DECOUPLED, **train)


_CLIP_GRIDS = [
    {"lrs": _LAW_LRS, "staleness": ["0", "2", "8", "32"], "seeds": _SEEDS},
    # sqrt(2) steps at the stability edge seen in the first two seeds' runs (2e-3..4e-3 at
    # S <= 2, 1e-3..2e-3 at S = 8, 5e-4..1e-3 at S = 32), and one LR below the grid where the
    # best LR sat at its lowest point (S >= 8)
    {"lrs": [2.8e-3], "staleness": ["0", "2"], "seeds": _SEEDS},
    {"lrs": [1.4e-3], "staleness": ["8"], "seeds": _SEEDS},
    {"lrs": [7e-4], "staleness": ["32"], "seeds": _SEEDS},
    {"lrs": [1.25e-4], "staleness": ["8", "32"], "seeds": _SEEDS},
    # the rest of the staleness axis, run after the first four S values, and sqrt(2) steps at
    # the stability edge those runs showed (2e-3..4e-3 at S = 1, 4; 5e-4..1e-3 at S = 16)
    {"lrs": _LAW_LRS, "staleness": ["1", "4", "16"], "seeds": _SEEDS},
    {"lrs": [2.8e-3], "staleness": ["1", "4"], "seeds": _SEEDS},
    {"lrs": [7e-4], "staleness": ["16"], "seeds": _SEEDS},
]

PRESETS.update(
    {
        # (a) the objective: clipped PPO (the default) and the decoupled objective (proximal =
        # current policy, importance weights truncated at 2: no clipping acts)
        "law-clip": _law_preset("law-clip", _CLIP_GRIDS),
        # tight clipping (epsilon 0.05 on both sides): a trust region 4-6x narrower
        "law-clip-tight": _law_preset(
            "law-clip-tight",
            [
                {"lrs": _LAW_LRS, "staleness": _ALL_S, "seeds": _SEEDS},
                # sqrt(2) steps at the stability edge the first 105 runs showed
                {"lrs": [2.8e-3], "staleness": ["0", "2", "4"], "seeds": _SEEDS},
                {"lrs": [5.6e-3], "staleness": ["1"], "seeds": _SEEDS},
                {"lrs": [1.4e-3], "staleness": ["8", "32"], "seeds": _SEEDS},
                {"lrs": [7e-4], "staleness": ["16"], "seeds": _SEEDS},
            ],
            grpo={"eps_low": 0.05, "eps_high": 0.05},
        ),
        "law-decoupled": _law_preset(
            "law-decoupled",
            [
                {"lrs": [5e-4, 1e-3, 2e-3, 2.8e-3], "staleness": ["0"], "seeds": _SEEDS},
                {"lrs": [1.25e-4, 2.5e-4, 5e-4, 7e-4, 1e-3], "staleness": ["32"], "seeds": _SEEDS},
                # the first runs showed no failure at the top of either grid: extend both
                {"lrs": [4e-3], "staleness": ["0"], "seeds": _SEEDS},
                {"lrs": [1.4e-3, 2e-3], "staleness": ["32"], "seeds": _SEEDS},
                # the rest of the staleness axis, and its edges once those runs showed them
                {"lrs": [2.5e-4, 5e-4, 1e-3, 2e-3], "staleness": _ALL_S[1:-1], "seeds": _SEEDS},
                {"lrs": [1.25e-4], "staleness": ["4", "8"], "seeds": _SEEDS},
                {"lrs": [2.8e-3, 4e-3], "staleness": ["1"], "seeds": _SEEDS},
                {"lrs": [1.4e-3], "staleness": ["2", "4", "8", "16"], "seeds": _SEEDS},
            ],
            grpo=_DECOUPLED,
        ),
        # (b) batch size (R_batch): law-decoupled (16 prompts) with 4, 8, 32 and 96 prompts
        # per step. For 4, the first 18 runs put the optimum below 5e-4 at both S: two LRs below
        # were added.
        "law-batch-4": _hub_preset(
            "law-batch-4",
            [1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3],
            _BATCH_S,
            edges=(([1.4e-3], _BATCH_S), ([7e-4], ["16", "32"])),
            prompts_per_step=4,
        ),
        # the first runs put the optimum at the grid's bottom at S = 4 and 16: 1.25e-4 added
        "law-batch-8": _hub_preset(
            "law-batch-8", [1.25e-4, *_LAW_LRS], _BATCH_S, prompts_per_step=8
        ),
        # the first 32-prompt runs put the optimum at the grid's bottom at S >= 4: two LRs
        # below were added, and the 96-prompt grid starts lower from the outset
        "law-batch-32": _hub_preset(
            "law-batch-32",
            [1.25e-4, 2.5e-4, *_ADAM_SHORT_LRS],
            _BATCH_S,
            edges=(([5.6e-3, 8e-3], ["0"]),),
            prompts_per_step=32,
        ),
        "law-batch-96": _hub_preset(
            "law-batch-96",
            [2.5e-4, *_ADAM_SHORT_LRS],
            _BATCH_S,
            edges=(([5.6e-3, 8e-3], ["0"]), ([1.25e-4], ["4"])),
            prompts_per_step=96,
        ),
        # (d) the horizon on a task that does not saturate early: 12 base-16 digits (a pilot run
        # at lr 1e-3, S = 0 went 0.64 -> 0.73 by step 60 and ~0.9 by step 300), 300-step runs,
        # read at T = 60 and T = 300 (`stalesim fit --horizon`; the learning rate is constant,
        # so the first 60 steps of a run are a 60-step run)
        "law-horizon-ns": _law_preset(
            "law-horizon-ns",
            [
                {"lrs": _LAW_LRS, "staleness": ["0", "2", "8", "32"], "seeds": _SEEDS},
                # the first runs put the optimum at the grid's bottom at S = 8 and 32
                {"lrs": [1.25e-4], "staleness": ["8", "32"], "seeds": _SEEDS},
                # S = 4 and 16, run last, to place the knee the first four S values showed
                {
                    "lrs": [1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3],
                    "staleness": ["4", "16"],
                    "seeds": _SEEDS,
                },
            ],
            task={"n_digits": 12, "base": 16},
            steps=300,
        ),
        # (c) the optimizer: law-decoupled with SGD (no momentum, momentum 0.9) or Adam beta1 0
        # the first runs left the optimum at the grid's bottom and no LR failing at S = 0
        "law-opt-sgd": _law_preset(
            "law-opt-sgd",
            [
                {"lrs": [0.0125, 0.025, 0.05, 0.1, 0.2], "staleness": _HUB_S, "seeds": _SEEDS},
                {"lrs": [0.4], "staleness": ["0"], "seeds": _SEEDS},
            ],
            grpo=_DECOUPLED,
            optimizer={"name": "sgd", "momentum": 0.0},
        ),
        # the first runs left no LR failing at S = 0 (SGD momentum 0.9) and the optimum at
        # the grid's bottom (Adam beta1 = 0): the grids were widened
        "law-opt-sgd-m0.9": _hub_preset(
            "law-opt-sgd-m0.9",
            [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08],
            optimizer={"name": "sgd", "momentum": 0.9},
        ),
        # the GPU question of the law's re-analysis: does eta_opt(8)/eta_opt(0) at ~80x the
        # parameters look like the non-saturating CPU task's (~0.3) or the saturating one's
        # (~0.6)? gpu-small's policy and vocabulary on the same 12-digit base-16 task, S in
        # {0, 8} x 4 rates x 2 seeds, 60-step runs (the horizon the CPU task is judged at
        # besides 300): 16 runs sized for one <= 8-minute device call (unmeasured: no GPU was
        # lent when it was written). Fit with `stalesim fit OUT` (the runs are 60 steps).
        "law-gpu-ns": {
            "preset": "law-gpu-ns",
            "train": {
                "task": {"n_digits": 12, "base": 16, "vocab_size": 32_768},
                "policy": {"n_layer": 6, "n_head": 8, "n_embd": 256},
                "warm_start": {
                    "steps": 400,
                    "batch_size": 256,
                    "corrupt_prob": 0.9,
                    "max_mistakes": 4,
                    "per_run_seed": True,
                },
                "steps": 60,
                "prompts_per_step": 16,
                "samples_per_prompt": 8,
                "target_reward": 0.85,
                "device": "cuda",
            },
            "grids": [
                {"lrs": [2.5e-4, 5e-4, 1e-3, 2e-3], "staleness": ["0", "8"], "seeds": [0, 1]}
            ],
        },
        "law-opt-adam-0": _hub_preset(
            "law-opt-adam-0",
            [1.25e-4, 2.5e-4, *_ADAM_SHORT_LRS],
            optimizer={"name": "adamw", "beta1": 0.0},
        ),
    }
)


# ---- A second task family: binary exact-match reward ------------------------------------
# Add two 3-digit numbers (least significant digit first); reward 1 iff the 4-digit sum is
# exactly right. The warm start (300 steps, half the demonstrations with 1-2 mistakes) passes
# about 1 sample in 9, and about half the groups of 8 hold both outcomes. The pilot (S = 0,
# seed 0, reports/results/law-task2/pilot): 5e-4 learned best (0.13 -> 0.53 by step 200, still
# rising), 1e-3 and above collapsed; so the grid runs from 2^-3 x to 2 x 5e-4, with the sqrt(2)
# step 7e-4 at the stability edge. The pilot's runs at rates of this grid have this preset's run
# ids: a sweep into a copy of its folder resumes from them.
_TASK2_TRAIN: dict = {
    **_LAW_BASE,
    "task": {"kind": "add", "n_digits": 3, "base": 10},
    "warm_start": {"steps": 300, "corrupt_prob": 0.5, "max_mistakes": 2, "per_run_seed": True},
    "steps": 200,
    "target_reward": 0.5,
}
_TASK2_LRS = [6.25e-5, 1.25e-4, 2.5e-4, 5e-4, 7e-4, 1e-3]

PRESETS["law-task2"] = {
    "preset": "law-task2",
    "train": _TASK2_TRAIN,
    "grids": [{"lrs": _TASK2_LRS, "staleness": ["0", "2", "4", "8", "16"], "seeds": [0, 1, 2, 3]}],
}


# ---- Batch size on the non-saturating task --------------------------------------------
# law-horizon-ns's task and horizon (sort 12 base-16 digits, 300 learner steps) at 16 x 8 and
# 64 x 8 groups x samples per step, and 64 x 8 in M = 4 mini-batches of 16 groups (four
# optimizer steps, i.e. versions, per learner step: S counts versions, so mini-batch m adds m
# to its lag). The paper's bound says the knee moves with the batch. Rates: the 16 x 8 optimum
# was 5.4e-4 at S = 0 (law-horizon-ns), falling past S = 2; a 4x batch is expected to take a
# higher rate and four updates per batch a lower one, so the grids are shifted 2x either way.
_NS_TASK = {"n_digits": 12, "base": 16}
_BATCH_NS_S = ["0", "2", "4", "8", "16"]
_BATCH_NS_SEEDS = [0, 1, 2, 3]


def _batch_ns_preset(name: str, lrs: list[float], **train: object) -> dict:
    return _law_preset(
        name,
        [{"lrs": lrs, "staleness": _BATCH_NS_S, "seeds": _BATCH_NS_SEEDS}],
        task=_NS_TASK,
        steps=300,
        **train,
    )


PRESETS.update(
    {
        "law-batch-ns-16": _batch_ns_preset(
            "law-batch-ns-16", [6.25e-5, 1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3]
        ),
        "law-batch-ns-64": _batch_ns_preset(
            "law-batch-ns-64", [1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3], prompts_per_step=64
        ),
        "law-batch-ns-64-mb4": _batch_ns_preset(
            "law-batch-ns-64-mb4",
            [3.125e-5, 6.25e-5, 1.25e-4, 2.5e-4, 5e-4, 1e-3],
            prompts_per_step=64,
            minibatches_per_step=4,
        ),
    }
)

# ---- The scheduler where the lag varies within a run -----------------------------------
#: The conservative shipped law's eta_opt curve (sim/data/laws/conservative.json, the
#: law-horizon-ns fit) that the alternating-lag scheduler experiment drives StalenessLR with.
#: Pinned, so that refitting the shipped law does not change the experiment's training config.
CONSERVATIVE_LAW = {
    "eta0": 0.0005575160119787951,
    "s_c": 40.345237564315894,
    "k": 1.0,
    "alpha": 4.999999999999999,
}


def _alternating_scheduler_presets() -> dict[str, dict]:
    """Learning-rate rules on the non-saturating task when the batch's lag alternates between 0
    and 8 from one learner step to the next (``alternating:0-8``, mean lag 4): unlike lags
    drawn per group, the batch's mean lag, which the rules read, really varies, so the law's
    rate moves 2.5x between steps (eta(0) 5.6e-4, eta(8) 2.3e-4 on the conservative curve).
    Rules: a constant at the law's eta(0), untuned; constants tuned at the mean lag (sqrt(2)
    steps around eta(4) = 3.5e-4); ``StalenessLR`` on the conservative law at each batch's
    mean lag, started at eta(0), untuned; the ESS rule from eta(0) and 2 x eta(0). 6 seeds."""
    eta0 = CONSERVATIVE_LAW["eta0"]
    seeds = [0, 1, 2, 3, 4, 5]
    rule = {
        "kind": "law",
        **CONSERVATIVE_LAW,
        "summary": "mean",
        "source": "sim/data/laws/conservative.json (reports/results/law-horizon/non-saturating)",
    }

    def preset(name: str, lrs: list[float], **train: object) -> dict:
        grids = [{"lrs": lrs, "staleness": ["alternating:0-8"], "seeds": seeds}]
        return _law_preset(name, grids, task=_NS_TASK, steps=300, **train)

    return {
        "law-sched-alt-eta0": preset("law-sched-alt-eta0", [eta0]),
        "law-sched-alt-constant": preset(
            "law-sched-alt-constant", [1.75e-4, 2.5e-4, 3.5e-4, 5e-4, 7e-4]
        ),
        "law-sched-alt-law": preset("law-sched-alt-law", [eta0], lr_rule=rule),
        "law-sched-alt-ess": preset("law-sched-alt-ess", [eta0, 2 * eta0], lr_rule={"kind": "ess"}),
    }


PRESETS.update(_alternating_scheduler_presets())


#: eta_opt(S) of the non-saturating task's 300-step sweep (``law-horizon-ns``, its law.json),
#: the centres of the confirmation grid below.
_NS_ETA_OPT = {0: 5.4e-4, 2: 5.5e-4, 4: 3.3e-4, 8: 1.8e-4}


def _knee_centre(s: int) -> float:
    """eta_opt at ``s`` from :data:`_NS_ETA_OPT`, interpolated linearly in (ln S, ln eta)
    between the two measured S around it (S = 3 and 6 were not run)."""
    if s in _NS_ETA_OPT:
        return _NS_ETA_OPT[s]
    lo = max(k for k in _NS_ETA_OPT if 0 < k < s)
    hi = min(k for k in _NS_ETA_OPT if k > s)
    t = math.log(s / lo) / math.log(hi / lo)
    return _NS_ETA_OPT[lo] * (_NS_ETA_OPT[hi] / _NS_ETA_OPT[lo]) ** t


def _knee_rates(s: int) -> list[float]:
    """Four sqrt(2)-spaced rates centred (in ln eta) on eta_opt(s), to 3 significant digits."""
    return [float(f"{_knee_centre(s) * 2 ** (e / 4):.3g}") for e in (-3, -1, 1, 3)]


#: The confirmation sweep's staleness values and its seeds (none used by law-horizon-ns).
KNEE_S = [0, 2, 3, 4, 6, 8]
KNEE_SEEDS = [3, 4, 5, 6, 7, 8]

PRESETS["law-knee-ns"] = _law_preset(
    "law-knee-ns",
    # seed pairs outermost, so that a sweep stopped early has every S with the same seeds
    [
        {"lrs": _knee_rates(s), "staleness": [str(s)], "seeds": KNEE_SEEDS[i : i + 2]}
        for i in range(0, len(KNEE_SEEDS), 2)
        for s in KNEE_S
    ],
    task={"n_digits": 12, "base": 16},
    steps=300,
)

_MIXED = ["uniform:0-32", "geometric:p=0.1,max=32"]

#: The law the scheduler experiment drives ``StalenessLR`` with: the law-clip fit (S in {0, 2, 8,
#: 32}) that shipped when the experiment was first run. Pinned, not read from the shipped law,
#: so that refitting the shipped law does not change the experiment's training config.
SCHEDULER_LAW = {
    "eta0": 0.0007528797560330376,
    "s_c": 1.0305519848430174,
    "k": 1.0,
    "alpha": 0.19189963877792987,
}


def _scheduler_presets() -> dict[str, dict]:
    """(e) learning-rate rules on mixed staleness, with the clipped objective the law was
    measured with: the best constant LR (a grid), the ESS rule (a grid of base LRs) and the
    staleness-aware scheduler driven by :data:`SCHEDULER_LAW`'s eta_opt at the batch's mean
    lag, started at the law's own eta_opt(0) (no tuning)."""
    rule = {
        "kind": "law",
        **SCHEDULER_LAW,
        "summary": "mean",
        "source": "reports/results/law-objective/clip",
    }
    grids = lambda lrs: [{"lrs": lrs, "staleness": _MIXED, "seeds": _SEEDS}]  # noqa: E731
    return {
        # 2e-3 was added when 1e-3, the top of the first grid, came out best on the geometric runs
        "law-sched-constant": _law_preset("law-sched-constant", grids([2.5e-4, 5e-4, 1e-3, 2e-3])),
        "law-sched-ess": _law_preset("law-sched-ess", grids([5e-4, 1e-3]), lr_rule={"kind": "ess"}),
        "law-sched-law": _law_preset("law-sched-law", grids([SCHEDULER_LAW["eta0"]]), lr_rule=rule),
    }


PRESETS.update(_scheduler_presets())


def preset_sweep(
    name: str,
    *,
    lrs: list[float] | None = None,
    staleness: list[str] | None = None,
    seeds: list[int] | None = None,
) -> SweepConfig:
    """The preset's sweep; if any of ``lrs``, ``staleness``, ``seeds`` is given, one grid made of
    those, the rest taken from the preset's first grid."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    data = dict(PRESETS[name])
    given = {"lrs": lrs, "staleness": staleness, "seeds": seeds}
    if any(v is not None for v in given.values()):
        first = data["grids"][0]
        data["grids"] = [{k: v if v is not None else first[k] for k, v in given.items()}]
    return validate_config(SweepConfig, data, source=f"preset {name}")
