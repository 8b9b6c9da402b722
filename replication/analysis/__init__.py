"""Analysing results: tidy tables, selection, statistics, the scorecard, figures, the report, references."""
