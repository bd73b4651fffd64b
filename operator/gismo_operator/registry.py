"""The one place that imports every module with kopf handlers (kopf registers on import).

``__main__`` and the test harness call :func:`load_handlers` before starting kopf, so both run the
same set of handlers. To add handlers: put them in a module under :mod:`gismo_operator.handlers`
and list it in :data:`HANDLER_MODULES`.

A listed module that does not exist is a start-up error naming it, never a silent skip: the pod
webhook's configuration uses failurePolicy Ignore, so a renamed ``raypods`` module that was skipped
would stop injection without a single error anywhere.
"""

from __future__ import annotations

import importlib

#: Every module with kopf handlers, in import order: process configuration (login, webhook server,
#: probes), GismoPools, RayClusters (slices, regions), the ``mutate-raypod`` webhook, agent refusals,
#: the sweep.
HANDLER_MODULES: tuple[str, ...] = (
    "gismo_operator.handlers.lifecycle",
    "gismo_operator.handlers.pools",
    "gismo_operator.handlers.rayclusters",
    "gismo_operator.handlers.raypods",
    "gismo_operator.handlers.agentrefusal",
    "gismo_operator.handlers.sweep",
)


class MissingHandlerModule(RuntimeError):
    """A module listed in :data:`HANDLER_MODULES` does not exist."""


def load_handlers() -> list[str]:
    """Import all handler modules; return their names, in order.

    Raises :class:`MissingHandlerModule` naming the module when a listed one does not exist; any
    other import error (a missing dependency inside a module) propagates unchanged.
    """
    for name in HANDLER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise MissingHandlerModule(
                    f"handler module {name} is listed in gismo_operator.registry.HANDLER_MODULES "
                    "but does not exist"
                ) from exc
            raise
    return list(HANDLER_MODULES)
