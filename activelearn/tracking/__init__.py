"""MLflow (the only code that talks to it), the figures of a round and the report of
a sweep.

Imports `workspace`, `data`, `core`.
"""
