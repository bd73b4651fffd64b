"""The one place that imports every module with kopf handlers (kopf registers on import).

``__main__`` and the test harness call :func:`load_handlers` before starting kopf, so both run the
same set of handlers. To add handlers: put them in a module and list it in
``EXTENSION_HANDLER_MODULES`` (the RayCluster reconciler and the pod webhook are already listed;
they are imported as soon as the module exists). An import error inside a listed module is never
swallowed: only a module that does not exist at all is skipped.
"""

from __future__ import annotations

import importlib

#: Core handlers: process configuration (login, webhook server) and GismoPools.
CORE_HANDLER_MODULES: tuple[str, ...] = (
    "gismo_operator.startup",
    "gismo_operator.pools",
)

#: Handlers of the RayCluster/injection work (slices, regions, the ``mutate-raypod`` webhook,
#: sweeps). Add further handler modules here.
EXTENSION_HANDLER_MODULES: tuple[str, ...] = (
    "gismo_operator.rayclusters",
    "gismo_operator.raypods",
    "gismo_operator.sweep",
)


def load_handlers() -> list[str]:
    """Import all handler modules; return the names actually imported, in order."""
    loaded: list[str] = []
    for name in CORE_HANDLER_MODULES:
        importlib.import_module(name)
        loaded.append(name)
    for name in EXTENSION_HANDLER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Skip only "this module is not written yet"; a missing dependency inside it is a bug.
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        loaded.append(name)
    return loaded
