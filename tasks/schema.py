"""Every participant table, imported in one place so that the schema is whole.

Alembic compares the models with the migrations through ``Base.metadata``; a model not
imported here would be missed by ``alembic check``.
"""

from __future__ import annotations

import importlib

#: The modules that declare tables, the example domains first (the baseline migration).
MODEL_MODULES = (
    "tasks.orders", "tasks.inventory", "tasks.payments", "tasks.shipping", "tasks.travel",
    "tasks.audit",
    "tasks.gate.models", "tasks.block.models", "tasks.link.models", "tasks.crown.models",
    "tasks.bolt.models", "tasks.nas.models", "tasks.reports.models",
)


def load() -> None:
    """Import every module that declares a table."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
