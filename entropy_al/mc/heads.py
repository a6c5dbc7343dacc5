"""Head-only MC dropout (``args['mc_head']``): where a model splits into a deterministic trunk and a stochastic head.

When dropout only begins late in the network (an MC head on a frozen backbone, the classifier of a CNN), the
``n_drop`` passes of a batch share everything before the first dropout module. Naming the split lets
:func:`.passes.mc_forward` run the trunk once per batch and only the head ``n_drop`` times; the logits are those of
the plain loop (the trunk is deterministic: it holds no dropout module), at a fraction of the cost.

Two ways to name the split:

- a ``(trunk, head)`` pair of submodules of the model such that ``model(x) == head(trunk(x))``. The pair is the
  user's promise about the model's forward; what can be checked is: both are submodules of the model (so that
  ``args['mc_mode']`` and the state restoration apply to them), they share no module, the trunk holds no dropout
  module and every dropout module of the model lies in the head.
- the (dotted) name of the module after which dropout begins, in an ``nn.Sequential`` model (nested
  ``nn.Sequential`` containers allowed along the name): the trunk is everything up to and including that module,
  the head everything after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .model_state import is_dropout_like

__all__ = ["HeadSplit", "resolve_split"]


@dataclass(frozen=True)
class HeadSplit:
    """A model split as ``model(x) == head(trunk(x))``, with no dropout module in ``trunk``.

    Attributes:
        trunk: runs once per batch, called like the model (``trunk(x)`` or ``trunk(**x)``).
        head: runs ``n_drop`` times on the trunk's output (``head(features)``).
    """

    trunk: nn.Module
    head: nn.Module


def _stochastic(module: nn.Module) -> bool:
    """Whether ``module`` drops anything in its MC mode: a dropout-like module with a non-zero rate (a
    ``TransformerEncoderLayer(dropout=0.0)`` in a frozen backbone is deterministic and may sit in the trunk)."""
    if not is_dropout_like(module):
        return False
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.MultiheadAttention):
        return module.dropout > 0
    return any(_stochastic(child) for child in module.modules() if child is not module)


def _named_modules_of(model: nn.Module) -> dict[int, str]:
    return {id(module): name or type(model).__name__ for name, module in model.named_modules(remove_duplicate=False)}


def _split_sequential(model: nn.Module, name: str, where: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """Trunk and head modules of a (nested) ``nn.Sequential`` split after the module called ``name``."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"{where}: args['mc_head'] = {name!r} names a split point, which needs an nn.Sequential model (nested "
            f"Sequentials allowed along the name); {type(model).__name__} is not one: pass a (trunk, head) pair of "
            "its submodules with model(x) == head(trunk(x)) instead"
        )
    trunk: list[nn.Module] = []
    head: list[nn.Module] = []
    container: nn.Module = model
    parts = name.split(".")
    for depth, part in enumerate(parts):
        children = list(container.named_children())
        names = [child_name for child_name, _ in children]
        if part not in names:
            at = ".".join(parts[:depth]) or "the model"
            raise ValueError(
                f"{where}: args['mc_head'] = {name!r}: {at} has no child {part!r}; its children are {names}"
            )
        position = names.index(part)
        child = children[position][1]
        trunk += [module for _, module in children[:position]]
        head = [module for _, module in children[position + 1 :]] + head
        if depth == len(parts) - 1:
            trunk.append(child)
        elif not isinstance(child, nn.Sequential):
            raise ValueError(
                f"{where}: args['mc_head'] = {name!r}: {'.'.join(parts[: depth + 1])} is a {type(child).__name__}, "
                "not an nn.Sequential, so the split cannot go inside it; name it or a module beside it instead, or "
                "pass a (trunk, head) pair"
            )
        container = child
    if not head:
        raise ValueError(f"{where}: args['mc_head'] = {name!r} is the model's last module: the head would be empty")
    return trunk, head


def resolve_split(model: nn.Module, spec: Any, where: str) -> HeadSplit | None:
    """Checks ``args['mc_head']`` against ``model`` and returns the split (``None`` when ``spec`` is ``None``).

    Raises:
        ValueError: the split is invalid: the name is not found or not in nested Sequentials, the head would be
            empty, a part is not a submodule of the model (or is the model), the parts overlap, the trunk holds a
            dropout module, or a dropout module of the model lies outside the head. The message names the module.
    """
    if spec is None:
        return None
    names = _named_modules_of(model)
    if isinstance(spec, str):
        trunk_modules, head_modules = _split_sequential(model, spec, where)
        trunk: nn.Module = nn.Sequential(*trunk_modules)
        head: nn.Module = nn.Sequential(*head_modules)
    else:
        trunk, head = spec
        for role, part in (("trunk", trunk), ("head", head)):
            if part is model:
                raise ValueError(f"{where}: args['mc_head']: the {role} is the whole model; split it into two parts")
            if id(part) not in names:
                raise ValueError(
                    f"{where}: args['mc_head']: the {role} ({type(part).__name__}) is not a submodule of the model; "
                    "pass submodules such as (model.features, model.classifier), so that the MC mode and the "
                    "restoration of the model's state apply to them"
                )
        trunk_modules, head_modules = [trunk], [head]
    inside_trunk = {id(m) for part in trunk_modules for m in part.modules()}
    inside_head = {id(m) for part in head_modules for m in part.modules()}
    shared = [module for module in model.modules() if id(module) in inside_trunk and id(module) in inside_head]
    if shared:
        raise ValueError(
            f"{where}: args['mc_head']: the trunk and the head share the module {names[id(shared[0])]}; they must be "
            "disjoint parts of the model"
        )
    for module in model.modules():
        if not _stochastic(module):
            continue
        if id(module) in inside_trunk:
            raise ValueError(
                f"{where}: args['mc_head']: the trunk contains the dropout module {names[id(module)]} "
                f"({type(module).__name__}); it would run once instead of n_drop times. Split after it"
            )
        if id(module) not in inside_head:
            raise ValueError(
                f"{where}: args['mc_head']: the model's dropout module {names[id(module)]} ({type(module).__name__}) "
                "is neither in the trunk nor in the head, so (trunk, head) cannot be the whole model"
            )
    return HeadSplit(trunk=trunk, head=head)
