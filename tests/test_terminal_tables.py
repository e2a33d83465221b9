"""Terminal tables are printed whole: every number with all its digits and every column present,
whether the output is a file (no wrapping there) or a narrow terminal."""

from __future__ import annotations

import io

from click.testing import CliRunner
from rich.console import Console
from rich.table import Table
from stalesim.cli import main
from stalesim.cli.tables import print_table

NUMBERS = [f"{1234.5678 * k:.4f}" for k in range(1, 12)]


def _wide_table() -> Table:
    table = Table(title="wide")
    table.add_column("setup: a long description that wraps", ratio=1, min_width=28)
    for k in range(len(NUMBERS)):
        table.add_column(f"#column{k}", justify="right", no_wrap=True)
    table.add_row("16×B200 ($4.99/h) 8×TP1+8 async≤2 128×8/1", *NUMBERS)
    return table


def _render(width: int, terminal: bool) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    print_table(_wide_table(), console)
    return buffer.getvalue()


def test_into_a_file_the_table_widens_only_as_far_as_it_must():
    out = _render(80, terminal=False)
    assert "…" not in out
    assert all(number in out for number in NUMBERS)
    assert all(f"#column{k}" in out for k in range(len(NUMBERS)))
    # the text column wraps at its words (28 wide, its minimum), numbers never wrap
    assert all(word in out for word in ["16×B200", "($4.99/h)", "8×TP1+8", "async≤2", "128×8/1"])
    widest = max(len(line) for line in out.splitlines())
    assert 80 < widest < sum(len(n) + 3 for n in NUMBERS) + 28 + 3 + 1 + 2


def test_a_table_that_fits_is_left_as_it_was():
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("a long description " * 8, "1.25")
    buffer = io.StringIO()
    print_table(table, Console(file=buffer, width=80))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) == 80  # the prose wrapped inside 80 columns
    assert sum("1.25" in line for line in lines) == 1


def test_a_narrow_terminal_folds_cells_and_crops_nothing():
    for width in (60, 80, 120):
        out = _render(width, terminal=True)
        lines = out.splitlines()
        assert "…" not in out
        assert max(len(line) for line in lines) <= width
        # every row of the table still ends in its right border: no column was cropped
        body = [line for line in lines if line[:1] in "┏┃┡│└"]
        assert body and all(line.rstrip()[-1] in "┓┃┩│┘" for line in body)


def test_only_the_text_column_wraps_where_the_numbers_fit():
    out = _render(200, terminal=True)
    assert all(number in out for number in NUMBERS)


def test_simulate_vary_prints_every_digit_to_a_pipe(tmp_path):
    args = ["simulate", "--vary", "algorithm.max_staleness=1,4", "--out", str(tmp_path / "o")]
    args += ["--steps", "8"]
    result = CliRunner().invoke(main, args, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert "time×" in result.output and "max_staleness=4" in result.output
