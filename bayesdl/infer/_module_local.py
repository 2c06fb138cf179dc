"""Running objects built outside Pyro's module-local mode inside it."""

from __future__ import annotations

from typing import Any

from pyro.nn import PyroModule
from torch import nn


def prepare_module_local(*objs: Any) -> None:
    """Let PyroModules (autoguides, ...) built outside ``module_local_params=True`` run inside it.

    A PyroModule records at construction whether module-local parameters were on; one built
    with the setting off lacks the per-module parameter state that the mode needs. Giving it an
    empty state is what construction under the mode would have done (its parameters are still
    created lazily on the first call).
    """
    for obj in objs:
        if not isinstance(obj, nn.Module):
            continue
        for module in obj.modules():
            if isinstance(module, PyroModule):
                context = module._pyro_context
                if not hasattr(context, "param_state"):
                    context.param_state = {"params": {}, "constraints": {}}
