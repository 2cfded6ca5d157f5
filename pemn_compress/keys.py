"""State-dict keys: one rule for joining a module name and an attribute (torch-free).

A module's state-dict entries are ``<module name>.<attribute>``, except for the root module, whose
name is ``""`` and whose entries are the bare attribute (``nn.Linear(...).state_dict()`` has
``weight`` and ``bias``, not ``.weight``). formats/pemn-v1.md allows a layer named ``""`` (a whole
model that is one ``nn.Linear``), so every place that builds such a key uses ``state_key``.
"""

from __future__ import annotations

__all__ = ["state_key"]


def state_key(module: str, attribute: str) -> str:
    """The state-dict key of ``attribute`` of the module named ``module`` ("" is the root).

    Invariant: ``state_key("", a) == a`` and ``state_key(m, a) == m + "." + a`` for any other ``m``.
    """
    return f"{module}.{attribute}" if module else attribute
