"""Imports every model module so ``Base.metadata`` is complete (for Alembic and tests).

Each domain adds its models module here, once.
"""

from __future__ import annotations

import importlib

MODEL_MODULES = [
    "clarion.core.queue_models",
    "clarion.orgs.models",
    "clarion.keys.models",
    "clarion.tags.models",
    "clarion.users.models",
    "clarion.events.models",
    "clarion.subscriptions.models",
    "clarion.dataschema.models",
    "clarion.imports.models",
    "clarion.providers.models",
    "clarion.providers.capture",
    "clarion.campaigns.models",
    "clarion.delivery.models",
    "clarion.locales.models",
    "clarion.templates.models",
    "clarion.webhooks.models",
    "clarion.lists.models",
]


def load_models() -> None:
    for name in MODEL_MODULES:
        importlib.import_module(name)


# Modules that register background-job handlers with @job_handler.
JOB_MODULES: list[str] = [
    "clarion.users.jobs",
    "clarion.dataschema.rebuild",
    "clarion.imports.jobs",
    "clarion.lists.jobs",
    "clarion.delivery.audience",
]


def load_job_handlers() -> None:
    for name in JOB_MODULES:
        importlib.import_module(name)
