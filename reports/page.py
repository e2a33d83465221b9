"""One self-contained HTML page: headline numbers, Altair charts, Polars tables and prose.

A :class:`Page` is assembled section by section and rendered to a single HTML file that opens
offline: the Vega, Vega-Lite and vega-embed JavaScript is inlined once per page (however many
charts it holds), the CSS is inline, and nothing is fetched from the network. Every page in
stalesim (simulate, validate, kernel bench) is built with it, so they share one look.

Example::

    page = Page("Kernel benchmark", subtitle="H100, bf16")
    page.metrics("Speed", [Metric("token_logprobs", 812.0, "GB/s")])
    page.chart(alt.Chart(frame).mark_line().encode(x="n:Q", y="gbps:Q"), heading="Bandwidth")
    page.table(frame, heading="All measurements", collapsed=True)
    page.write(out_dir / "bench.html")
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import altair as alt
import polars as pl
from stalesim.common.files import write_text

#: vega-embed options shared by every chart: SVG (crisp, and testable in a DOM dump), no menu
#: entries that would open web sites, and one visual style for all pages.
EMBED_OPTIONS: dict[str, Any] = {
    "renderer": "svg",
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
    "config": {
        "font": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        "view": {"stroke": None},
        "axis": {"labelColor": "#444", "titleColor": "#222", "gridColor": "#e8e8ee"},
        "legend": {"labelColor": "#444", "titleColor": "#222"},
        "range": {
            "category": [
                "#4c78a8",
                "#f58518",
                "#54a24b",
                "#e45756",
                "#72b7b2",
                "#b279a2",
                "#eeca3b",
                "#9d755d",
            ]
        },
    },
}


@dataclass(frozen=True)
class Metric:
    """One headline number.

    ``kind="percent"`` shows a fraction in 0..1 as a percentage; ``value`` stays the fraction
    (it is what the page records in ``data-value``, so tests can compare it with the source).
    ``None`` shows as a dash: "not available", never a made-up zero.
    """

    label: str
    value: float | int | str | None
    unit: str = ""
    note: str = ""
    kind: Literal["number", "percent"] = "number"

    def display(self) -> tuple[str, str]:
        """The value and unit as shown on the page."""
        if self.kind == "percent" and isinstance(self.value, int | float):
            return format_number(100.0 * self.value), "%"
        return format_number(self.value), self.unit


def format_number(value: float | int | str | None) -> str:
    """A number rounded to four significant digits, with thousands separators and without
    trailing zeros; ``None`` and NaN are a dash."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude < 1e-3 or magnitude >= 1e15:
        return f"{value:.3e}"
    decimals = max(0, 3 - math.floor(math.log10(magnitude)))
    text = f"{value:,.{decimals}f}"
    # Trailing zeros claim a precision the number may not have: 4.0 shows as "4".
    return text.rstrip("0").rstrip(".") if "." in text else text


@functools.cache
def vega_javascript() -> str:
    """The vega-embed + Vega-Lite + Vega bundle matching the installed Altair, as one script."""
    import vl_convert

    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    bundle = vl_convert.javascript_bundle(vl_version=f"{major}.{minor}")
    # An inline script ends at the first "</script"; the bundle must never contain one.
    if re.search(r"</script", bundle, re.IGNORECASE):
        raise RuntimeError("the Vega JavaScript bundle cannot be inlined: it contains </script")
    return bundle


class Page:
    """An HTML page assembled from sections, in the order they are added."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._sections: list[str] = []
        self._specs: list[dict[str, Any]] = []

    @property
    def chart_count(self) -> int:
        """How many charts the page holds."""
        return len(self._specs)

    def metrics(self, heading: str, metrics: Sequence[Metric]) -> Page:
        """A group of headline numbers shown as cards."""
        cards = []
        for metric in metrics:
            shown, unit = metric.display()
            title = f' title="{_escape(metric.note)}"' if metric.note else ""
            cards.append(
                f'<div class="metric" data-label="{_escape(metric.label)}"'
                f' data-value="{_escape(_raw(metric.value))}"{title}>'
                f'<div class="metric-label">{_escape(metric.label)}</div>'
                f'<div class="metric-value">{_escape(shown)}'
                f'<span class="metric-unit{" percent" if unit == "%" else ""}">{_escape(unit)}</span>'
                "</div></div>"
            )
        self._sections.append(
            f'<section>{_heading(heading)}<div class="metrics">{"".join(cards)}</div></section>'
        )
        return self

    def chart(self, chart: alt.TopLevelMixin, heading: str = "", caption: str = "") -> Page:
        """An Altair chart, embedded as its Vega-Lite spec (data included) and drawn offline."""
        with alt.data_transformers.enable("default", max_rows=None):
            spec = chart.to_dict()
        index = len(self._specs)
        self._specs.append(_finite(spec))
        self._sections.append(
            f"<section>{_heading(heading)}"
            f'<div class="chart" id="chart-{index}" data-chart="{index}"></div>'
            f"{_caption(caption)}</section>"
        )
        return self

    def table(
        self,
        frame: pl.DataFrame,
        heading: str = "",
        caption: str = "",
        collapsed: bool = False,
        max_rows: int = 500,
    ) -> Page:
        """A Polars frame as an HTML table; ``collapsed`` folds it under its heading."""
        table = frame_to_html(frame, max_rows=max_rows)
        if collapsed:
            summary = _escape(heading or "Table")
            body = f'<details class="fold"><summary>{summary}</summary>{table}{_caption(caption)}</details>'
            self._sections.append(f"<section>{body}</section>")
        else:
            self._sections.append(
                f"<section>{_heading(heading)}{table}{_caption(caption)}</section>"
            )
        return self

    def prose(self, text: str, heading: str = "") -> Page:
        """Plain text; blank lines separate paragraphs and `backticks` mark code."""
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        body = "".join(f"<p>{_inline_code(_escape(' '.join(p.split())))}</p>" for p in paragraphs)
        self._sections.append(f'<section class="prose">{_heading(heading)}{body}</section>')
        return self

    def html(self) -> str:
        """The whole page as one HTML document."""
        scripts = ""
        if self._specs:
            specs = json.dumps(self._specs, separators=(",", ":"), allow_nan=False)
            options = json.dumps(EMBED_OPTIONS, separators=(",", ":"))
            scripts = (
                f"<script>{vega_javascript()}</script>\n"
                f'<script type="application/json" id="chart-specs">{_script_safe(specs)}</script>\n'
                f"<script>{_EMBED_SCRIPT.replace('__OPTIONS__', options)}</script>\n"
            )
        subtitle = f'<p class="subtitle">{_escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<main>\n<header><h1>{_escape(self.title)}</h1>{subtitle}</header>\n"
            + "\n".join(self._sections)
            + "\n<footer>Written by stalesim. This page is self-contained and works offline."
            "</footer>\n</main>\n" + scripts + "</body>\n</html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Render and write the page atomically; returns its path."""
        return write_text(path, self.html())


def frame_to_html(frame: pl.DataFrame, max_rows: int = 500) -> str:
    """A Polars frame as a plain HTML table (numbers right-aligned and formatted)."""
    shown = frame.head(max_rows)
    numeric = [dtype.is_numeric() for dtype in shown.dtypes]
    numeric_class = ' class="num"'
    head = "".join(
        f"<th{numeric_class if is_num else ''}>{_escape(name)}</th>"
        for name, is_num in zip(shown.columns, numeric, strict=True)
    )
    rows = []
    for row in shown.iter_rows():
        cells = "".join(
            f'<td class="num">{_escape(format_number(value))}</td>'
            if is_num
            else f"<td>{_escape('—' if value is None else str(value))}</td>"
            for value, is_num in zip(row, numeric, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    more = ""
    if frame.height > max_rows:
        more = f'<p class="caption">First {max_rows:,} of {frame.height:,} rows.</p>'
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{more}"
    )


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _raw(value: float | int | str | None) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _heading(text: str) -> str:
    return f"<h2>{_escape(text)}</h2>" if text else ""


def _caption(text: str) -> str:
    return f'<p class="caption">{_inline_code(_escape(text))}</p>' if text else ""


def _inline_code(escaped: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _script_safe(text: str) -> str:
    # JSON inside <script>: "<" as a JSON escape keeps "</script" and "<!--" out of the HTML.
    return text.replace("<", "\\u003c")


def _finite(value: Any) -> Any:
    """The spec with NaN and infinities as null: JSON.parse rejects them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# Each chart div gets data-rendered="1" once drawn, or an error note: a page never fails
# silently, and tests can see whether the charts really rendered.
_EMBED_SCRIPT = """
(function () {
  const specs = JSON.parse(document.getElementById("chart-specs").textContent);
  const options = __OPTIONS__;
  specs.forEach(function (spec, i) {
    const el = document.getElementById("chart-" + i);
    vegaEmbed(el, spec, options)
      .then(function () { el.dataset.rendered = "1"; })
      .catch(function (err) {
        el.dataset.rendered = "error";
        const note = document.createElement("p");
        note.className = "chart-error";
        note.textContent = "This chart could not be drawn: " + err;
        el.appendChild(note);
      });
  });
})();
"""

_CSS = """
:root { --ink: #1d1d24; --muted: #62626e; --line: #e3e3ea; --card: #f7f7fa; --accent: #4c78a8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 28px 48px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 8px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0; letter-spacing: -0.01em; }
.subtitle { color: var(--muted); margin: 4px 0 0; }
h2 { font-size: 18px; margin: 28px 0 10px; }
section { margin: 0 0 8px; }
.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.metric { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 12px; }
.metric-label { color: var(--muted); font-size: 12.5px; }
.metric-value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.metric-unit { font-size: 13px; font-weight: 400; color: var(--muted); margin-left: 4px; }
.metric-unit.percent { margin-left: 1px; }
.chart { overflow-x: auto; }
.caption { color: var(--muted); font-size: 13px; margin: 4px 0 0; }
.chart-error { color: #b00020; }
.prose p { max-width: 760px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--card); padding: 1px 4px; border-radius: 4px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: var(--card); font-weight: 600; }
td.num, th.num { text-align: right; }
td.num { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfbfd; }
details.fold { margin: 24px 0 0; border: 1px solid var(--line); border-radius: 8px;
  padding: 8px 12px; }
details.fold > summary { cursor: pointer; font-weight: 600; font-size: 16px; }
details.fold[open] > summary { margin-bottom: 8px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12.5px;
  border-top: 1px solid var(--line); padding-top: 10px; }
"""
