"""The page machinery: offline, one JavaScript bundle, escaped content, formatted numbers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import altair as alt
import polars as pl
import pytest
from stalesim.reports.page import Metric, Page, format_number, frame_to_html, vega_javascript


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def two_chart_page() -> Page:
    frame = pl.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, 4.0, 9.0]})
    page = Page("Two charts", subtitle="a <test> & more")
    page.metrics(
        "Numbers", [Metric("speed", 1234.5678, "tokens/s"), Metric("busy", 0.25, kind="percent")]
    )
    page.chart(alt.Chart(frame).mark_line().encode(x="x:Q", y="y:Q"), heading="Line")
    page.chart(
        alt.Chart(frame).mark_bar().encode(x="x:O", y="y:Q"), heading="Bars", caption="see `y`"
    )
    page.table(frame, heading="Data", collapsed=True)
    page.prose("First paragraph with `code`.\n\nSecond <b>paragraph</b>.", heading="Notes")
    return page


def test_page_references_nothing_on_the_network():
    tags = parse(two_chart_page().html())
    for tag, attrs in tags.tags:
        for name in ("src", "href", "data", "srcset", "poster"):
            value = attrs.get(name) or ""
            assert not re.match(r"\s*(https?:)?//", value), (tag, name, value)
    assert not [tag for tag, _ in tags.tags if tag in {"link", "iframe", "img", "object"}]
    assert all("src" not in attrs for tag, attrs in tags.tags if tag == "script")


def test_javascript_bundle_is_inlined_once_for_several_charts():
    page = two_chart_page()
    html = page.html()
    bundle = vega_javascript()
    assert len(bundle) > 100_000
    assert html.count(bundle) == 1
    assert html.count("window.vegaEmbed=") == 1
    scripts = parse(html).scripts
    assert len(scripts) == 3
    specs = json.loads(scripts[1])
    assert len(specs) == page.chart_count == 2
    assert [
        spec["mark"]["type"] if isinstance(spec["mark"], dict) else spec["mark"] for spec in specs
    ] == [
        "line",
        "bar",
    ]
    assert len(re.findall(r'<div class="chart" id="chart-\d+"', html)) == 2


def test_chart_data_survive_embedding_exactly():
    frame = pl.DataFrame({"x": list(range(6000)), "y": [i * 0.5 for i in range(6000)]})
    page = Page("Big").chart(alt.Chart(frame).mark_line().encode(x="x:Q", y="y:Q"))
    spec = json.loads(parse(page.html()).scripts[1])[0]
    (values,) = spec["datasets"].values()
    assert len(values) == 6000  # Altair's 5000-row limit does not apply to pages
    assert values[4321] == {"x": 4321, "y": 2160.5}


def test_page_without_charts_carries_no_javascript():
    page = Page("Plain").prose("Just text.")
    assert "<script" not in page.html()


def test_text_is_escaped_and_script_data_cannot_close_the_tag():
    frame = pl.DataFrame({"label": ["</script><script>alert(1)</script>"], "y": [1.0]})
    page = Page("<Title>").chart(alt.Chart(frame).mark_bar().encode(x="label:N", y="y:Q"))
    page.table(frame)
    html = page.html()
    assert "<title>&lt;Title&gt;</title>" in html
    assert html.count("<script") == 3 and html.count("</script>") == 3
    spec = json.loads(parse(html).scripts[1])[0]
    (values,) = spec["datasets"].values()
    assert values[0]["label"] == "</script><script>alert(1)</script>"


def test_prose_paragraphs_code_and_escaping():
    html = two_chart_page().html()
    assert "<p>First paragraph with <code>code</code>.</p>" in html
    assert "<p>Second &lt;b&gt;paragraph&lt;/b&gt;.</p>" in html
    assert '<p class="subtitle">a &lt;test&gt; &amp; more</p>' in html


def test_metrics_record_the_exact_value_and_show_it_rounded():
    html = two_chart_page().html()
    assert 'data-label="speed" data-value="1234.5678"' in html
    assert '<div class="metric-value">1,235<span class="metric-unit">tokens/s</span>' in html
    assert 'data-label="busy" data-value="0.25"' in html
    assert '<div class="metric-value">25<span class="metric-unit percent">%</span>' in html


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "—"),
        (float("nan"), "—"),
        (0.0, "0"),
        (4.0, "4"),
        (4.25, "4.25"),
        (0.33333333, "0.3333"),
        (123.456789, "123.5"),
        (1234567.8, "1,234,568"),
        (-0.5, "-0.5"),
        (1e-6, "1.000e-06"),
        (12345, "12,345"),
        ("n/a", "n/a"),
    ],
)
def test_format_number(value, shown):
    assert format_number(value) == shown


def test_frame_to_html_formats_numbers_and_truncates():
    frame = pl.DataFrame({"name": ["a", None, "c"], "v": [1.5, 2000.25, None]})
    html = frame_to_html(frame, max_rows=2)
    assert '<th>name</th><th class="num">v</th>' in html
    assert '<tr><td>a</td><td class="num">1.5</td></tr>' in html
    assert '<tr><td>—</td><td class="num">2,000</td></tr>' in html
    assert "First 2 of 3 rows." in html


def test_write_is_atomic_and_returns_the_path(tmp_path):
    path = Page("Written").prose("x").write(tmp_path / "deep" / "page.html")
    assert path == tmp_path / "deep" / "page.html"
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["page.html"]
