"""Features of a named submodule (DISTIL's ``feature_extraction``).

DISTIL registers a forward hook on every call and never removes it, so each call adds one more hook to the model.
Here the hook lives for one call (or one pass over a dataset) and is removed on every exit path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["LayerCapture", "captured_layer"]


class LayerCapture:
    """The last output of one submodule, written by a forward hook."""

    def __init__(self, layer_name: str, where: str):
        self.layer_name = layer_name
        self.where = where
        self.output: torch.Tensor | None = None

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"{self.where}: layer_name {self.layer_name!r} returned a {type(output).__name__}; expected a "
                "tensor of features"
            )
        self.output = output.detach()

    def take(self) -> torch.Tensor:
        """The captured features, ``torch.squeeze``d as DISTIL returns them; clears the capture."""
        if self.output is None:
            raise RuntimeError(
                f"{self.where}: the model's forward never called its submodule {self.layer_name!r} (layer_name)"
            )
        features, self.output = self.output, None
        return torch.squeeze(features)


@contextmanager
def captured_layer(model: nn.Module, layer_name: str, where: str) -> Iterator[LayerCapture]:
    """Hooks the top-level submodule ``layer_name`` of ``model`` for the block (removed on exit)."""
    children = dict(model.named_children())
    if not isinstance(layer_name, str) or layer_name not in children:
        raise ValueError(
            f"{where}: expected layer_name to name a top-level submodule of {type(model).__name__} "
            f"(one of {sorted(children)}), got {layer_name!r}"
        )
    capture = LayerCapture(layer_name, where)
    handle = children[layer_name].register_forward_hook(capture.hook)
    try:
        yield capture
    finally:
        handle.remove()
