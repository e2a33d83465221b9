"""Offline HTML reports rendered from result files (Parquet and JSON), never from live objects."""
