"""Measuring the staleness–learning-rate law: sweeps of training runs, the failure rule, per-S estimates, slopes, coverage checks and the fit from a sweep to ``law.json``."""
