"""The embeddings of DISTIL's ``Strategy`` (penultimate layer, BADGE's last-layer gradients): per-batch math."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["GRAD_EMBEDDING_TYPES", "embedding_dim", "last_layer_gradients", "logits_and_embedding"]

GRAD_EMBEDDING_TYPES = ("bias", "linear", "bias_linear")


def logits_and_embedding(output: Any, rows: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], torch.Tensor)):
        raise TypeError(f"{where}: expected model(x, last=True) to return (logits, embedding), got {type(output)}")
    if output[1].dim() == 0 or output[1].shape[0] != rows:
        raise ValueError(
            f"{where}: the model returned an embedding of shape {tuple(output[1].shape)} for a batch of {rows} "
            "samples; expected one row per sample"
        )
    embedding = output[1].detach().reshape(rows, -1)
    return output[0], embedding


def embedding_dim(model: nn.Module) -> int:
    get_dim = getattr(model, "get_embedding_dim", None)
    return int(get_dim()) if callable(get_dim) else 0


def last_layer_gradients(
    loss: Callable[..., torch.Tensor],
    logits: torch.Tensor,
    embedding: torch.Tensor,
    targets: torch.Tensor,
    grad_embedding_type: str,
) -> torch.Tensor:
    """Gradient embedding of one batch (see :meth:`Strategy.get_grad_embedding`)."""
    with torch.enable_grad():
        # Differentiate with respect to a detached copy of the logits: this is all BADGE needs, and it works
        # whether or not the model's parameters require grad.
        leaf = logits.detach().requires_grad_(True)
        (bias_grads,) = torch.autograd.grad(loss(leaf, targets, reduction="sum"), leaf)
    if grad_embedding_type == "bias":
        return bias_grads
    linear_grads = (bias_grads[:, :, None] * embedding[:, None, :].to(bias_grads.dtype)).flatten(1)
    if grad_embedding_type == "linear":
        return linear_grads
    return torch.cat([bias_grads, linear_grads], dim=1)
