"""The config reader: YAML, overrides and one-line validation errors."""

from pathlib import Path

import pytest
from stalesim.sim.config_file import (
    ConfigError,
    StrictModel,
    apply_overrides,
    deep_merge,
    load_config,
)


class Inner(StrictModel):
    count: int = 1
    rate: float = 0.5


class Outer(StrictModel):
    name: str = "x"
    inner: Inner = Inner()


def test_overrides_parse_yaml_values_and_nest() -> None:
    data = apply_overrides(
        {"inner": {"count": 1}}, ["inner.count=7", "inner.rate=1e-3", "name=abc"]
    )
    assert data == {"inner": {"count": 7, "rate": 1e-3}, "name": "abc"}


def test_deep_merge_keeps_untouched_keys() -> None:
    merged = deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    assert merged == {"a": {"b": 1, "c": 3}}


def test_unknown_key_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  count: 2\n  bogus: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    message = str(info.value)
    assert "\n" not in message
    assert "unknown key inner.bogus" in message


def test_bad_value_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Outer, overrides=["inner.count=many"])
    assert "inner.count='many'" in str(info.value)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("inner:\n  count: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_config(Outer, path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_set_without_equals() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["inner.count"])
