"""Example apps built on Sagaline; run from the repository root, never installed.

See ``examples/README.md`` for how to run each one.
"""
