"""Rendering: plots and reports over the result table (reads tables only)."""
