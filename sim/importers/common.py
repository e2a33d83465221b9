"""What every importer shares: the result record, the model lookup, launch-script parsing and
the YAML the import writes.

An importer reads a trainer's config and fills an :class:`Imported`: each scenario key it sets
with the framework key it came from, each default it fills in, and each framework key that
matters but has no scenario counterpart. Nothing is silent: :meth:`Imported.report` lists all
three, and the written YAML carries them as comments.
"""

from __future__ import annotations

import ast
import operator
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from stalesim.common.config_file import ConfigError, deep_merge, read_config_text, validate_config
from stalesim.sim.models import MODELS, preset_for

#: The keys that size a model when no preset matches its name.
MODEL_KEYS = (
    "model.params",
    "model.layers",
    "model.hidden_size",
    "model.attention_heads",
    "model.kv_heads",
    "model.head_dim",
)


@dataclass
class Imported:
    """A scenario mapping built from a trainer's config, with the provenance of every key."""

    framework: str
    source: str
    scenario: dict[str, Any] = field(default_factory=dict)
    mapped: list[tuple[str, str, Any]] = field(default_factory=list)  # (scenario, from, value)
    defaults: list[tuple[str, Any, str]] = field(default_factory=list)  # (key, value, why)
    unmapped: list[tuple[str, Any, str]] = field(default_factory=list)  # (key, value, why)
    notes: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, source: str) -> None:
        """Set scenario ``key`` (dotted) to ``value``, read from framework key(s) ``source``."""
        node = self.scenario
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        self.mapped.append((key, source, value))

    def fill(self, key: str, value: Any, why: str) -> None:
        """Set scenario ``key`` to a default the config does not give, and report it."""
        self.set(key, value, "")
        self.mapped.pop()
        self.default(key, value, why)

    def default(self, key: str, value: Any, why: str) -> None:
        """Record a default filled in (``key`` is a scenario key or a framework key)."""
        self.defaults.append((key, value, why))

    def unmatched(self, key: str, value: Any, why: str) -> None:
        """Record a framework key that matters but has no scenario counterpart."""
        self.unmapped.append((key, value, why))

    def report(self) -> list[str]:
        """The printout: what was imported, each default filled in, each key left out."""
        lines = [f"imported from {self.framework} config {self.source}"]
        lines += [f"  {key} = {_show(value)}  <- {source}" for key, source, value in self.mapped]
        if self.defaults:
            lines.append("defaults filled in:")
            lines += [f"  {key} = {_show(value)}: {why}" for key, value, why in self.defaults]
        if self.unmapped:
            lines.append("no counterpart in the scenario (not simulated):")
            lines += [f"  {key} = {_show(value)}: {why}" for key, value, why in self.unmapped]
        lines += [f"note: {note}" for note in self.notes]
        return lines

    def yaml_text(self) -> str:
        """The scenario YAML, with the report as comments above it."""
        header = "".join(f"# {line}\n" for line in self.report())
        body = yaml.safe_dump(self.scenario, sort_keys=False, default_flow_style=False)
        return header + body


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def validated(imported: Imported) -> Imported:
    """Check that the imported mapping is a valid scenario over the default preset (a one-line
    :class:`ConfigError` otherwise) and warn, in the notes, when it could not run."""
    from stalesim.sim.derived import derive
    from stalesim.sim.presets import DISTRIBUTIONS, preset_mapping
    from stalesim.sim.scenario import Scenario, check_consistent

    base = preset_mapping("default")
    patch = imported.scenario
    work = patch.get("workload", {})
    base["workload"] = {
        k: v for k, v in base["workload"].items() if not (k in DISTRIBUTIONS and k in work)
    }
    source = f"{imported.framework} config {imported.source}"
    scenario = validate_config(Scenario, deep_merge(base, patch), source)
    check_consistent(scenario)
    try:
        derive(scenario)  # runs the feasibility checks
    except ConfigError as exc:
        imported.notes.append(f"simulate will refuse this scenario as it stands: {exc}")
    return imported


def model_preset(imported: Imported, model: Any, key: str) -> None:
    """Map a model id or path to ``model.preset``; an unknown one is a one-line error."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(
            f"{imported.source}: {key} is missing: the model to import (a Hugging Face id or path)"
        )
    preset = preset_for(model)
    if preset is None:
        raise ConfigError(
            f"{imported.source}: {key}={model!r}: no model preset has this name; add it to "
            f"sim/models.py, or write the scenario by hand with a preset of a similar shape and "
            f"set {', '.join(MODEL_KEYS)} (presets: {', '.join(MODELS)})"
        )
    imported.set("model.preset", preset, f"{key}={model}")


def positive_int(value: Any, key: str, source: str) -> int:
    """``value`` as a whole number >= 1, else a one-line error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"{source}: {key}={value!r}: expected a whole number")
    if value < 1:
        raise ConfigError(f"{source}: {key}={value!r}: expected a whole number >= 1")
    return int(value)


def read_text(path: Path) -> str:
    """A config file's text (see :func:`stalesim.common.config_file.read_config_text`)."""
    return read_config_text(path, "config file")


# --- launch scripts ---------------------------------------------------------------------------

_ASSIGN = re.compile(r"^\s*(?:export\s+|local\s+|readonly\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VAR = re.compile(
    r"\$\(\((?P<arith>(?:[^()]|\([^()]*\))*)\)\)"
    r"|\$\{(?P<array>[A-Za-z_][A-Za-z0-9_]*)\[[@*]\]\}"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}$]*))?\}"
    r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)
#: Stands for the ``$`` of a variable the script does not set, until expansion ends.
_UNSET = "\x00"


@dataclass
class Script:
    """A shell launch script reduced to what a trainer sees: the variables and arrays it sets
    and the argument list of the command that starts the trainer."""

    variables: dict[str, str]
    arrays: dict[str, list[str]]
    command: list[str]
    unresolved: set[str]


def logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined and whole-line comments dropped."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\[ \t]*\n", " ", "\n".join(kept)).splitlines()


def parse_script(text: str, marker: re.Pattern[str], source: str) -> Script:
    """Read a launch script: its variable and array assignments (in order, with ``$VAR``,
    ``${VAR}``, ``${VAR:-default}``, ``${ARR[@]}`` and ``$((arithmetic))`` expanded) and the
    tokens of the first line whose command matches ``marker``."""
    variables: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    unresolved: set[str] = set()
    lines = logical_lines(text)
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        match = _ASSIGN.match(line)
        if match and match.group(2).lstrip().startswith("("):
            body = match.group(2).lstrip()[1:]
            while ")" not in _strip_comment(body) and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            body = _strip_comment(body).rsplit(")", 1)[0]
            tokens = _split(_expand(body, variables, arrays, unresolved), source)
            arrays[match.group(1)] = tokens
            continue
        if marker.search(line):
            tokens = _split(_expand(line, variables, arrays, unresolved), source)
            return Script(variables, arrays, tokens, unresolved)
        if match:
            tokens = _split(_expand(match.group(2), variables, arrays, unresolved), source)
            variables[match.group(1)] = " ".join(tokens)
    raise ConfigError(f"{source}: no command line starting the trainer ({marker.pattern}) found")


def _strip_comment(body: str) -> str:
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in body.splitlines())


def _split(text: str, source: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError as exc:
        raise ConfigError(f"{source}: cannot split a shell line ({exc})") from None


def _expand(
    text: str, variables: dict[str, str], arrays: dict[str, list[str]], missing: set[str]
) -> str:
    """Shell expansion of variables, arrays and arithmetic; innermost first, so that
    ``${A:-"${B}/x"}`` works. A variable the script does not set stays ``$NAME``."""

    def value(name: str, default: str | None) -> str:
        if name in variables:
            return variables[name]
        if name in arrays:
            return arrays[name][0] if arrays[name] else ""
        if default is not None:
            return default.strip("'\"")
        missing.add(name)
        return _UNSET + name

    def sub(m: re.Match[str]) -> str:
        if m.group("arith") is not None:
            expr = re.sub(
                r"\$?\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                lambda v: value(v.group(1), None),
                m.group("arith"),
            )
            result = _arithmetic(expr)
            return m.group(0).replace("$", _UNSET) if result is None else str(result)
        if m.group("array") is not None:
            name = m.group("array")
            if name not in arrays:
                missing.add(name)
                return ""
            return shlex.join(arrays[name])
        if m.group("braced") is not None:
            return value(m.group("braced"), m.group("default"))
        return value(m.group("plain"), None)

    for _ in range(16):
        expanded = _VAR.sub(sub, text)
        if expanded == text:
            break
        text = expanded
    return text.replace(_UNSET, "$")


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.floordiv,  # shell arithmetic is integer arithmetic
    ast.Mod: operator.mod,
}


def _arithmetic(expr: str) -> int | None:
    """Integer shell arithmetic (``+ - * / %`` and parentheses), or None when not that."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError):
        return None


def yaml_scalar(raw: str) -> Any:
    """A command-line value as YAML reads it (numbers, booleans, null, lists), else the text."""
    from stalesim.common.config_file import parse_override_value

    return parse_override_value(raw, "value")
