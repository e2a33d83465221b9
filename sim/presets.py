"""Built-in scenarios (``sim/data/*.yaml``): each one lies over the default."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from stalesim.common.config_file import (
    ConfigError,
    apply_overrides,
    deep_merge,
    load_yaml_text,
    read_yaml_mapping,
    validate_config,
)
from stalesim.sim.scenario import Scenario, check_consistent

DEFAULT = "default"


def _data_files() -> dict[str, Any]:
    folder = resources.files("stalesim.sim") / "data"
    # plans (``*-plan.yaml``) live beside the scenarios but are not scenarios
    return {
        p.name.removesuffix(".yaml"): p
        for p in folder.iterdir()
        if p.name.endswith(".yaml") and not p.name.endswith("-plan.yaml")
    }


def preset_names() -> list[str]:
    names = sorted(_data_files())
    names.remove(DEFAULT)
    return [DEFAULT, *names]


def preset_mapping(name: str) -> dict[str, Any]:
    """The preset's YAML laid over the default's."""
    files = _data_files()
    if name not in files:
        raise ConfigError(
            f"--preset {name!r}: unknown preset; allowed: {', '.join(preset_names())}"
        )
    base = load_yaml_text(files[DEFAULT].read_text(), f"preset {DEFAULT}") or {}
    if name == DEFAULT:
        return base
    patch = load_yaml_text(files[name].read_text(), f"preset {name}") or {}
    return deep_merge(_without_replaced_distributions(base, patch), patch)


def preset_description(name: str) -> str:
    lines = _data_files()[name].read_text().splitlines()
    words = []
    for line in lines:
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    return " ".join(words)


def load_scenario(
    path: str | None = None, preset: str | None = None, overrides: tuple[str, ...] = ()
) -> Scenario:
    """Preset (default when none), then the YAML file, then ``--set`` overrides."""
    data = preset_mapping(DEFAULT if preset is None else preset)
    source = "config"
    if path is not None:
        patch = _paths_relative_to(read_yaml_mapping(path), Path(path).parent)
        data = _without_replaced_distributions(data, patch)
        data = deep_merge(data, patch)
        source = str(path)
    data = _without_replaced_distributions(data, apply_overrides({}, overrides))
    data = apply_overrides(data, overrides)
    scenario = validate_config(Scenario, data, source)
    check_consistent(scenario)
    return scenario


def _without_replaced_distributions(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    # A length distribution is replaced whole: merging a "fixed" one into a "lognormal" one
    # would mix their keys.
    work = patch.get("workload")
    if not isinstance(work, dict) or not isinstance(base.get("workload"), dict):
        return base
    base = dict(base)
    base["workload"] = {
        k: v
        for k, v in base["workload"].items()
        if not (k in DISTRIBUTIONS and isinstance(work.get(k), dict) and "kind" in work[k])
    }
    return base


DISTRIBUTIONS = ("prompt_tokens", "response_tokens")


def _paths_relative_to(patch: dict[str, Any], folder: Path) -> dict[str, Any]:
    # an empirical length file named in a scenario file is found next to that file
    work = patch.get("workload")
    if not isinstance(work, dict):
        return patch
    for key in DISTRIBUTIONS:
        dist = work.get(key)
        path = dist.get("path") if isinstance(dist, dict) else None
        if isinstance(path, str) and not Path(path).is_absolute():
            dist["path"] = str(folder / path)
    return patch
