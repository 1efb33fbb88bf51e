"""Offline analysis of cldst results: Parquet -> tidy DataFrames, tables, findings, figures, report.

Reads results only through `cldst.results.load` and never imports torch or ray, so it runs on
a laptop. For notebooks::

    import analysis
    runs = analysis.load("results/quick")                 # one row per trial
    tasks = analysis.load("results/quick", kind="tasks")  # one row per (trial, task learned)

The command line, `python -m analysis.report RESULTS_DIR`, writes the whole report.
"""

from analysis.data import Loaded, load, load_all, ok_runs
from cldst.results import ResultsError

__all__ = ["Loaded", "ResultsError", "load", "load_all", "ok_runs"]
