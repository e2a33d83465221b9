"""Reading configs: YAML files, ``--set key=value`` overrides, and pydantic validation.

Every failure is a :class:`ConfigError` whose message is one line naming the key, the value
and what is allowed, so that the CLI can print it and exit with code 2.

One YAML loader serves every config (scenario files, presets, ``--set`` values): the safe
loader, with duplicate keys refused, alias expansion and nesting depth bounded (a "billion
laughs" document fails at once instead of hanging), YAML 1.2 numbers (``1e-3`` is a float, as
people mean it, not the string YAML 1.1 makes of it), and undecodable bytes reported with their
offset. Config models are strict: a number is finite and of the declared type (``true`` is not
a number, ``"3"`` is not an integer); a whole float such as ``1e6`` is accepted where an integer
is declared.
"""

from __future__ import annotations

import codecs
import copy
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)

#: Deepest nesting a config may have (scenarios are four levels deep).
MAX_YAML_DEPTH = 32
#: Most values a document may hold once its aliases are expanded.
MAX_YAML_VALUES = 100_000


class ConfigError(ValueError):
    """A config is malformed or impossible; the message is one user-facing line."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated,
    numbers are finite and of the declared type (a whole float counts as an integer)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_declared(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: _as_declared(value, fields[key].annotation) if key in fields else value
            for key, value in data.items()
        }


def _number_kinds(annotation: Any) -> tuple[bool, bool]:
    """Whether ``annotation`` (possibly optional) accepts an int, and a float."""
    args = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return int in args, float in args


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _as_declared(value: Any, annotation: Any) -> Any:
    if typing.get_origin(annotation) is list and isinstance(value, list):
        (inner,) = typing.get_args(annotation) or (Any,)
        return [_as_declared(v, inner) for v in value]
    if isinstance(value, bool | str) or not isinstance(value, numbers.Real):
        return value
    wants_int, wants_float = _number_kinds(annotation)
    if wants_int and not wants_float:
        if isinstance(value, numbers.Integral):
            return int(value)
        as_float = float(value)
        if math.isfinite(as_float) and as_float.is_integer():
            return int(as_float)
    elif wants_float and not isinstance(value, float | int):
        try:
            return float(value)  # numpy scalars
        except (OverflowError, ValueError):
            return value
    return value


# --- YAML -------------------------------------------------------------------------------------


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader with duplicate keys refused and nesting depth bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(
                    f"nested deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" then a key of base is an override, not a duplicate
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise _Refused(
                        f"duplicate key {key!r} at line {line} (first at line {first_line[key]})"
                    )
                first_line[key] = line
            except TypeError:
                continue  # an unhashable key: the base class reports it
        return super().construct_mapping(node, deep=deep)


class _Refused(Exception):
    """A document the loader refuses to build; the message says why, without the source."""


# YAML 1.2 reads 1e-3 and 1E6 as numbers; YAML 1.1 (PyYAML) would make strings of them.
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _expanded_size(root: Any) -> int:
    """Values in the document once every alias is expanded (each node counted per use)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and not children_done:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_VALUES + 1)
            continue
        if key in on_path:
            raise _Refused("an alias refers to a value that contains it")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _Refused("an alias refers to a value that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _load(text: str) -> Any:
    """Parse one document; raises :class:`_Refused` or ``yaml.YAMLError``."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_VALUES:
            raise _Refused(
                f"aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?)"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise _Refused("nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document with the config loader; errors are :class:`ConfigError` lines
    starting with ``source``."""
    try:
        return _load(text)
    except _Refused as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"{source}: character #x{exc.character:04x} at offset {exc.position} is not "
            "allowed in YAML"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as text; undecodable bytes are a :class:`ConfigError` naming their offset."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        raise ConfigError(
            f"{source}: not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset})"
        ) from None


#: A config file larger than this is not a config (``/dev/zero``, a log passed by mistake).
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def read_config_text(path: str | Path, kind: str = "YAML file") -> str:
    """The text of a config file (a YAML file, a launch script, saved arguments); at most
    ``MAX_CONFIG_BYTES`` are read, so an endless device or a huge file is refused. A missing,
    unreadable or non-UTF-8 file is a one-line error; ``kind`` names what a folder is not."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a {kind}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config file")
    return decode_utf8(data, str(path))


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path`` (``None`` when empty), read with the config loader
    (through :func:`read_config_text`)."""
    return load_yaml_text(read_config_text(path), str(path))


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is an empty mapping)."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top, got {type(data).__name__}"
        )
    return data


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` laid over it; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override_value(raw: str, source: str) -> Any:
    """A ``--set`` value: a YAML scalar or flow collection, else the text itself."""
    if not raw.strip():
        return ""
    try:
        return _load(raw)
    except _Refused as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}") from None
    except yaml.YAMLError:
        return raw


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``path.to.key=value`` overrides; values are parsed as YAML scalars or lists.

    An override ``@FILE`` lays a YAML file of sections over the data instead (a scenario
    fragment, such as ``stalesim calibrate`` writes), in its place among the others.
    """
    result = copy.deepcopy(dict(data))
    for item in overrides:
        if item.startswith("@"):
            result = deep_merge(result, _override_file(item[1:]))
            continue
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. algorithm.mode=async")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set {item!r}: the key is empty")
        value = parse_override_value(raw, f"--set {dotted.strip()}")
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return result


def _override_file(path: str) -> dict[str, Any]:
    if not path.strip():
        raise ConfigError("--set @: name a YAML file after the @, e.g. --set @calibrated.yaml")
    if not Path(path).is_file():
        raise ConfigError(f"--set @{path}: no such file")
    return read_yaml_mapping(path)


# --- validation errors ------------------------------------------------------------------------

_RANGE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "finite_number",
    "int_type",
    "int_parsing",
    "int_from_float",
    "float_type",
    "float_parsing",
}


def _field_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The FieldInfo a validation error location points at, or None."""
    current: Any = model
    field = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        kind = current.model_fields.get("kind")
        if kind is not None and kind.default == part and field is not None:
            continue  # the tag of a discriminated union, between a field and its model
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _model_in(field.annotation, loc)
    return field


def _model_in(annotation: Any, loc: tuple[Any, ...]) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _model_in(args[0], loc)
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    for candidate in models:  # a discriminated union: the tag is the next part of the location
        kind = candidate.model_fields.get("kind")
        if kind is not None and kind.default in loc:
            return candidate
    return models[0] if len(models) == 1 else annotation


def allowed_range(field: Any) -> str:
    """``"allowed: 1 <= value <= 100000 (whole number)"`` from a field's bounds, or ``""``."""
    low = high = ""
    for bound in field.metadata:
        for attr, text in (("gt", "{} < "), ("ge", "{} <= ")):
            if getattr(bound, attr, None) is not None:
                low = text.format(_number(getattr(bound, attr)))
        for attr, text in (("lt", " < {}"), ("le", " <= {}")):
            if getattr(bound, attr, None) is not None:
                high = text.format(_number(getattr(bound, attr)))
    wants_int, wants_float = _number_kinds(field.annotation)
    if not (wants_int or wants_float):
        return ""
    kind = " (whole number)" if wants_int and not wants_float else " (finite number)"
    return f"allowed: {low}value{high}{kind}"


def _number(value: float) -> str:
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e6):
        return str(int(value))
    return f"{value:g}"


def _describe(error: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    loc = tuple(error.get("loc", ()))
    location = ".".join(str(part) for part in loc) or "(top level)"
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown key {location!s}"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else _short_repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind in _RANGE_ERRORS and model is not None:
        field = _field_at(model, loc)
        allowed = allowed_range(field) if field is not None else ""
        if allowed:
            message = f"{message}; {allowed}"
    return f"{location}={shown}: {message}"


def _short_repr(value: dict | list) -> str:
    # repr of an alias-expanded structure could be huge; show its shape only
    return f"<{type(value).__name__} of {len(value)}>" if len(value) > 8 else repr(value)[:80]


def validate_config(model: type[M], data: Mapping[str, Any], source: str = "config") -> M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with one line on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0], model)
        more = (
            f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
            if len(errors) > 1
            else ""
        )
        raise ConfigError(f"{source}: {first}{more}") from None


def load_config(
    model: type[M],
    path: str | Path | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> M:
    """Build a validated config: ``base`` (a preset), then the YAML file, then ``--set`` overrides."""
    data: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        data = deep_merge(data, read_yaml_mapping(path))
        source = str(path)
    data = apply_overrides(data, overrides)
    return validate_config(model, data, source)
