"""Offline HTML reports rendered from result files (Parquet and JSON), never from live objects.

Build a page with :class:`stalesim.reports.page.Page` (headline :class:`~stalesim.reports.page.Metric`
cards, Altair charts, Polars tables, prose); read inputs with :mod:`stalesim.reports.inputs`
(one-line errors naming the file); bin long time traces with :mod:`stalesim.reports.timeline`.
"""
