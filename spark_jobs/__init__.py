"""Spark entry points, each runnable with spark-submit (see each module's docstring)."""
