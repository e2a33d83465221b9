"""The config reader: YAML, overrides and one-line validation errors."""

from pathlib import Path

import numpy as np
import pytest
from pydantic import Field, ValidationError
from stalesim.common.config_file import (
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    ConfigError,
    StrictModel,
    apply_overrides,
    deep_merge,
    load_config,
    load_yaml_text,
    read_yaml_mapping,
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


# --- the YAML loader ------------------------------------------------------------------------


class Bounded(StrictModel):
    count: int = Field(1, ge=1, le=100)
    rate: float = Field(0.5, gt=0, le=1)
    maybe: int | None = Field(None, ge=0, le=10)
    seeds: list[int] = Field(default_factory=lambda: [0])


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "inner:\n  count: 2\n  rate: 0.1\n  count: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    assert str(info.value) == (
        f"{path}: malformed YAML: duplicate key 'count' at line 4 (first at line 2)"
    )


def test_duplicate_top_level_sections_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "inner: {count: 2}\nname: a\ninner: {rate: 0.2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'inner' at line 3"):
        load_config(Outer, path)


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "base: &b {count: 2, rate: 0.1}\ninner:\n  <<: *b\n  count: 5\n")
    assert read_yaml_mapping(path)["inner"] == {"count": 5, "rate": 0.1}


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(lines) + f"\nname: *a{levels}\n"


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    # 10^10 strings once expanded: a loader that expanded them would never return.
    path = write(tmp_path, billion_laughs())
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    assert str(info.value) == (
        f"{path}: malformed YAML: aliases expand to more than {MAX_YAML_VALUES:,} values "
        "(an alias bomb?)"
    )


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "inner: &v {count: 3}\nother: [*v, *v]\n")
    data = read_yaml_mapping(path)
    assert data["other"] == [{"count": 3}, {"count": 3}]


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError, match="an alias refers to a value that contains it"):
        load_yaml_text("a: &a [1, *a]\n", "doc")


def test_deep_nesting_is_refused_before_python_recursion(tmp_path: Path) -> None:
    path = write(tmp_path, "inner: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    assert str(info.value) == (
        f"{path}: malformed YAML: nested deeper than {MAX_YAML_DEPTH} levels at line 1"
    )


def test_not_utf8_names_byte_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, b"inner:\n  count: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0xff at offset 16)"


def test_utf8_bom_is_accepted_and_offsets_count_it(tmp_path: Path) -> None:
    assert read_yaml_mapping(write(tmp_path, b"\xef\xbb\xbfname: a\n")) == {"name": "a"}
    path = write(tmp_path, b"\xef\xbb\xbfname: \xc3\n")
    with pytest.raises(ConfigError, match=r"byte 0xc3 at offset 9\)"):
        read_yaml_mapping(path)


def test_control_characters_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: a\x00b\n")
    with pytest.raises(ConfigError) as info:
        read_yaml_mapping(path)
    assert str(info.value) == f"{path}: character #x0000 at offset 7 is not allowed in YAML"


def test_a_folder_is_not_a_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        read_yaml_mapping(tmp_path)


def test_yaml_12_numbers(tmp_path: Path) -> None:
    data = read_yaml_mapping(write(tmp_path, "a: 1e-3\nb: 2E6\nc: -1.5e+2\nd: 1_000\ne: 1e\n"))
    assert data == {"a": 1e-3, "b": 2e6, "c": -150.0, "d": 1000, "e": "1e"}


def test_alias_bomb_in_set_is_refused() -> None:
    inner = ", ".join(["1"] * 10)
    value = f"[&a [{inner}], &b [{', '.join(['*a'] * 10)}], &c [{', '.join(['*b'] * 10)}], "
    value += f"&d [{', '.join(['*c'] * 10)}], [{', '.join(['*d'] * 100)}]]"
    with pytest.raises(ConfigError, match="--set name: malformed YAML: aliases expand"):
        apply_overrides({}, [f"name={value}"])


def test_unparsable_set_value_stays_text() -> None:
    assert apply_overrides({}, ["name=a: b: c"]) == {"name": "a: b: c"}


# --- strict numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("count=true", "count=True: Input should be a valid integer; allowed: 1 <= value <= 100"),
        ("rate=false", "rate=False: Input should be a valid number; allowed: 0 < value <= 1"),
        ("rate=.inf", "rate=inf: Input should be a finite number; allowed: 0 < value <= 1"),
        ("rate=.nan", "rate=nan: Input should be a finite number"),
        ("count='7'", "count='7': Input should be a valid integer"),
        ("count=2.5", "count=2.5: Input should be a valid integer"),
        ("count=1e12", "count=1000000000000: Input should be less than or equal to 100; allowed"),
        ("count=0", "count=0: Input should be greater than or equal to 1; allowed: 1 <= value"),
        ("maybe=11", "maybe=11: Input should be less than or equal to 10; allowed: 0 <= value"),
        ("seeds=[1, true]", "seeds.1=True: Input should be a valid integer"),
    ],
)
def test_numbers_are_finite_typed_and_in_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Bounded, overrides=[override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_whole_floats_are_integers_and_ints_are_floats() -> None:
    config = load_config(Bounded, overrides=["count=1e2", "rate=1", "maybe=4.0", "seeds=[2.0, 3]"])
    assert (config.count, config.rate, config.maybe, config.seeds) == (100, 1.0, 4, [2, 3])
    assert type(config.count) is int and type(config.rate) is float


def test_numpy_scalars_are_accepted() -> None:
    config = Bounded(count=np.int64(5), rate=np.float32(0.25))
    assert (config.count, config.rate) == (5, 0.25)


def test_assignment_is_checked_too() -> None:
    config = Bounded()
    with pytest.raises(ValidationError):
        config.rate = float("inf")
    with pytest.raises(ValidationError):
        config.count = True
