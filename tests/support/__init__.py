"""Harnesses shared by the test suites (importable as `support` through pytest's `pythonpath`)."""
