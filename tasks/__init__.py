"""The participants: each domain's tables, and its actions and compensations as saga tasks."""
