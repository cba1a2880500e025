"""Kagent's benchmarks: `make bench` runs them all; each reports against a baseline measured in
the same run, so the figures are ratios that mean something on any machine."""
