"""A consistent dropout injected before one layer of the model for an MC run, as DISTIL's BatchBALD does.

DISTIL's ``BatchBALDDropout`` wraps ``model.<mod_inject>`` (its models' last layer, ``linear``) in
``Sequential(ConsistentMCDropout(p=0.5), layer)``, puts the model in eval mode (its own dropout off) and draws one
mask per pass, shared by every pool sample: each pass is one sample of the model. :func:`injected_dropout` does the
same for the duration of a run and puts the original layer and every flag, parameter and buffer back afterwards.

Two kinds of injected dropout:
- keyed (the default): an ``nn.Dropout(0.5)`` that :func:`entropy_al.mc.keyed_mc_dropout` keys like any dropout
  module; the plan's ``consistent`` flag keys every row by the same id, so the mask of pass k is a function of
  (seed, k, element) only, whatever the batching, stacking or ranks;
- DISTIL's (``reproduce_distil``): :class:`PassMaskDropout`, whose mask is drawn from torch's generator at the
  first forward of each pass, in DISTIL's pass-major loop, so that the random-number use is DISTIL's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .model_state import preserved_state

__all__ = ["INJECTED_DROPOUT_P", "PassMaskDropout", "injected_dropout"]

#: Drop probability of the injected dropout: DISTIL's (``ConsistentMCDropout``'s default).
INJECTED_DROPOUT_P = 0.5


class PassMaskDropout(nn.Module):
    """Dropout with one mask per pass: ``bernoulli_(p)`` over a sample's elements (True = dropped), drawn from
    torch's generator at the first forward after :meth:`reset`, then applied to every sample until the next reset;
    kept elements are scaled by ``1 / (1 − p)``. Active whatever the module's training flag."""

    def __init__(self, p: float = INJECTED_DROPOUT_P):
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def reset(self) -> None:
        self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            self.mask = torch.empty((1, *x.shape[1:]), dtype=torch.bool, device=x.device).bernoulli_(self.p)
        return x.masked_fill(self.mask, 0) / (1 - self.p)


@contextlib.contextmanager
def injected_dropout(model: nn.Module, name: str, where: str, per_pass_masks: bool) -> Iterator[Callable[[], None]]:
    """Injects a dropout before ``model.<name>`` for the block, the rest of the model in eval mode.

    Args:
        model: the network.
        name: the attribute holding the layer (a direct submodule of ``model``).
        where: the public method, for messages.
        per_pass_masks: inject a :class:`PassMaskDropout` (DISTIL's random-number use) instead of a keyed
            ``nn.Dropout``.

    Yields:
        What to call at the start of each pass (draws a new mask at the next forward; a no-op for keyed masks).
    """
    layer = model._modules.get(name) if isinstance(name, str) else None
    if layer is None:
        raise ValueError(
            f"{where}: args['mod_inject'] = {name!r}, but {type(model).__name__} has no submodule attribute "
            f"{name!r} to inject dropout before; name the layer (DISTIL's models: 'linear'), or set "
            "args['mod_inject'] = None to use the model's own dropout modules"
        )
    dropout: nn.Module = PassMaskDropout() if per_pass_masks else nn.Dropout(INJECTED_DROPOUT_P)
    with preserved_state(model):
        setattr(model, name, nn.Sequential(dropout, layer))
        try:
            model.eval()
            dropout.train()
            yield dropout.reset if per_pass_masks else _nothing
        finally:
            setattr(model, name, layer)


def _nothing() -> None:
    return None
