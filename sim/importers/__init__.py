"""Importers of trainers' configs: one module per framework, registered here.

Each module exposes ``NAME``, ``import_config(path, extra)`` (returning a validated
:class:`~stalesim.sim.importers.common.Imported`) and imports a shipped example when ``path``
is None. Adding a framework is one module plus one line below.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from stalesim.common.config_file import ConfigError
from stalesim.sim.hardware import CATALOG
from stalesim.sim.importers.common import Imported

#: framework name -> module that imports its configs
IMPORTERS: dict[str, str] = {
    "verl": "stalesim.sim.importers.verl",
    "openrlhf": "stalesim.sim.importers.openrlhf",
    "areal": "stalesim.sim.importers.areal",
}


def import_trainer_config(
    framework: str, path: Path | None = None, extra: tuple[str, ...] = (), gpu: str | None = None
) -> Imported:
    """The scenario imported from ``framework``'s config at ``path`` (its example when None);
    ``gpu`` names the GPU type, which no trainer config states."""
    key = framework.lower()
    if key not in IMPORTERS:
        raise ConfigError(f"unknown framework {framework!r}; allowed: {', '.join(IMPORTERS)}")
    if gpu is not None and gpu not in CATALOG:
        raise ConfigError(f"--gpu {gpu!r}: unknown GPU; allowed: {', '.join(CATALOG)}")
    imported = import_module(IMPORTERS[key]).import_config(path, tuple(extra))
    if gpu is not None:
        imported.defaults = [d for d in imported.defaults if d[0] != "hardware.gpu"]
        imported.set("hardware.gpu", gpu, "--gpu")
    stem = "example" if path is None else path.stem
    if path is not None and path.parent.name == ".hydra":  # a run folder's resolved config
        stem = path.parent.parent.name
    imported.scenario = {"name": f"{key}-{stem}", **imported.scenario}
    return imported


__all__ = ["IMPORTERS", "Imported", "import_trainer_config"]
