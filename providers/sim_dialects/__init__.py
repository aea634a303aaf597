"""The upstream simulator's wire dialects, one module each, found by ``discover``.

Every module of this package whose name does not start with ``_`` (and is not ``base``) is a
dialect: it defines a module-level ``DIALECT``, an instance of ``SimDialect``. Modules named
``_something`` are private helpers a dialect may share (an eventstream encoder, say) and are
skipped. See ``providers.simulator`` for how to add a dialect.
"""

from __future__ import annotations

import importlib
import pkgutil

from providers.sim_dialects.base import BadRequest, ErrorShape, Plan, SimDialect, Turn

__all__ = ["BadRequest", "ErrorShape", "Plan", "SimDialect", "Turn", "discover"]

_NOT_DIALECTS = frozenset({"base"})


def discover() -> list[SimDialect]:
    """Import every dialect module of this package and return their ``DIALECT``s, by module name.

    Raises ``TypeError`` for a dialect module without a ``SimDialect`` ``DIALECT`` and
    ``ValueError`` for two dialects with the same ``name`` or a dialect without routes, so a
    broken module fails at start-up rather than going unserved.
    """
    dialects: list[SimDialect] = []
    seen: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name.startswith("_") or info.name in _NOT_DIALECTS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        dialect = getattr(module, "DIALECT", None)
        if not isinstance(dialect, SimDialect):
            raise TypeError(f"{module.__name__} must define DIALECT, a providers.sim_dialects.SimDialect instance")
        if not getattr(dialect, "name", None) or not getattr(dialect, "routes", None):
            raise ValueError(f"{module.__name__}: DIALECT needs a name and at least one route")
        if dialect.name in seen:
            raise ValueError(f"dialect {dialect.name!r} is defined by {seen[dialect.name]} and {module.__name__}")
        seen[dialect.name] = module.__name__
        dialects.append(dialect)
    return dialects
