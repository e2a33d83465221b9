"""Variants of one scenario compared in one run (``stalesim simulate --vary KEY=V1,V2,...``).

Each ``--vary`` names a scenario key and its values; several ``--vary`` options multiply. Every
variant is the scenario with those keys set, as a ``--set`` would, and is simulated with the
same steps and seed, so the rows differ by the varied keys alone. A variant's row holds the
headline numbers and the law's reading of it (multipliers of the user's on-policy run, and
the user's own numbers when the scenario's ``target`` gives a baseline).
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

from stalesim.common.config_file import ConfigError

if TYPE_CHECKING:
    from stalesim.sim.metrics import RunSummary

#: More variants than this in one call is a mistake (a typo in a list), not a comparison.
MAX_VARIANTS = 64


def parse_vary(specs: tuple[str, ...]) -> list[list[tuple[str, str]]]:
    """Every variant as a list of ``(key, raw value)`` pairs, in the order given (the first
    ``--vary`` varies slowest). Values are split at commas and parsed later as ``--set``
    values are."""
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(
                f"--vary {spec!r}: expected KEY=V1,V2,..., e.g. algorithm.max_staleness=1,2,4"
            )
        key, raw = (part.strip() for part in spec.split("=", 1))
        values = [v.strip() for v in raw.split(",")]
        if not key:
            raise ConfigError(f"--vary {spec!r}: the key is empty")
        if not raw or any(not v for v in values):
            raise ConfigError(f"--vary {key}: an empty value in {raw!r}")
        if key in (k for k, _ in axes):
            raise ConfigError(f"--vary {key}: given twice; list all its values in one --vary")
        if len(set(values)) != len(values):
            raise ConfigError(f"--vary {key}: a value is repeated in {raw!r}")
        axes.append((key, values))
    count = 1
    for _, values in axes:
        count *= len(values)
    if count > MAX_VARIANTS:
        raise ConfigError(
            f"--vary: {count} variants ({' x '.join(str(len(v)) for _, v in axes)}); at most "
            f"{MAX_VARIANTS} in one call"
        )
    keys = [k for k, _ in axes]
    return [
        list(zip(keys, combo, strict=True))
        for combo in itertools.product(*(values for _, values in axes))
    ]


def label(variant: list[tuple[str, str]]) -> str:
    """A variant in one line, each key by its last part: ``max_staleness=4 mode=async``."""
    return " ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in variant)


def folder_name(index: int, variant: list[tuple[str, str]]) -> str:
    """The variant's subfolder: its index and a file-safe form of its label."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", label(variant).replace(" ", "_"))
    return f"{index:02d}-{slug}"[:80]


#: The law's columns a variant's row carries, where the reading has them.
LAW_COLUMNS = (
    "staleness",
    "lr_multiplier",
    "steps_multiplier",
    "time_to_target_rel",
    "learning_rate",
    "learner_steps_to_target",
    "time_to_target_s",
    "cost_to_target_usd",
)


#: The summary's columns a variant's row carries (from :meth:`RunSummary.row`), in this order.
SUMMARY_COLUMNS = (
    "gpus",
    "samples_per_s",
    "tokens_per_s",
    "step_time_mean_s",
    "staleness_mean",
    "staleness_max",
    "utilisation_rollout",
    "utilisation_learner",
)


def variant_row(variant: list[tuple[str, str]], summary: RunSummary, folder: str) -> dict:
    """The headline numbers of one variant's summary, flat."""
    law = summary.law or {}
    flat = summary.row()
    row: dict[str, Any] = {"variant": label(variant), "folder": folder}
    row |= {key: value for key, value in variant}
    row |= {name: flat[name] for name in SUMMARY_COLUMNS}
    row |= {f"law_{name}": law.get(name) for name in LAW_COLUMNS if name in law}
    return row
