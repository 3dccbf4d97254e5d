"""Data-quality gates: Great Expectations suites stored under ``expectations/``."""
