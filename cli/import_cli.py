"""``stalesim import``: a scenario YAML from a trainer's config."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="import", context_settings={"ignore_unknown_options": True})
@click.argument("framework", metavar="[FRAMEWORK]", required=False, default="verl")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1, metavar="[OVERRIDES]...")
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the scenario YAML here; printed to stdout otherwise.",
)
@click.option(
    "--gpu",
    default=None,
    metavar="NAME",
    help="The GPU type the run used (no trainer config states it) [default: H100, reported].",
)
def import_config(
    framework: str,
    config: Path | None,
    overrides: tuple[str, ...],
    out_file: Path | None,
    gpu: str | None,
) -> None:
    """Write a scenario from a trainer's config: FRAMEWORK is verl (the default), openrlhf or
    areal.

    CONFIG is verl's resolved .hydra/config.yaml, a ppo_trainer.yaml (or recipe config) or a
    launch script; OpenRLHF's saved arguments (JSON/YAML) or launch script; AReaL's experiment
    YAML. OVERRIDES are Hydra-style key=value (verl, AReaL; +key=value adds a key) or extra
    --flag value arguments (OpenRLHF). Without CONFIG it imports the framework's shipped
    example (verl's own default config) and says so. Every key mapped, every default filled in
    and every key that has no counterpart is printed (and kept as comments in the YAML), so
    `stalesim simulate FILE` and a plan's `base: {file: FILE}` start from your run. The mapping
    is documented in docs/importers.md.
    """
    from stalesim.common.files import write_text
    from stalesim.sim.importers import import_trainer_config

    imported = import_trainer_config(framework, config, overrides, gpu)
    text = imported.yaml_text()
    if out_file is None:
        click.echo(text, nl=False)
        return
    write_text(out_file, text)
    for line in imported.report():
        click.echo(line)
    click.echo(f"wrote {out_file}")
