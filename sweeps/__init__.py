"""Sweep scripts (run them as `python sweeps/full_grid.py ...`); `common` holds what they share."""
