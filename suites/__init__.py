"""The built-in suites, installed as package data ``harness.builtin_suites`` (``layerbench suites``)."""
