"""Dataset items and batches: what the model is called with, and where the labels are.

A collated batch is a tensor (``model(x)``), a mapping (``model(**batch)``, any ``Mapping``, not only an exact
``dict`` as in DISTIL) or a sequence whose first element is the input (an ``(x, y)`` item collates to ``[x, y]``;
DISTIL crashes there). Labels are the second element of a sequence or the ``"labels"`` key of a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["as_logits", "batch_labels", "call_model", "dataset_length", "model_input", "to_device", "without_labels"]


def to_device(value: Any, device: torch.device) -> Any:
    """Moves a tensor, or the tensor values of a mapping or sequence (recursively), to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {key: to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_device(item, device) for item in value]
    if hasattr(value, "to"):  # e.g. a transformers BatchEncoding or a user batch type
        return value.to(device)
    return value


def model_input(batch: Any, where: str) -> torch.Tensor | Mapping[str, Any]:
    """The part of a collated batch the model is called with: the tensor, the mapping, or a sequence's first item."""
    if isinstance(batch, (torch.Tensor, Mapping)):
        return batch
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) > 0:
        first = batch[0]
        if isinstance(first, (torch.Tensor, Mapping)):
            return first
    raise TypeError(
        f"{where}: expected dataset items to be tensors, mappings (the model is called as model(**item)) or "
        f"(x, y) pairs, got a batch of type {type(batch).__name__}"
    )


def call_model(model: nn.Module, inputs: torch.Tensor | Mapping[str, Any], **kwargs: Any) -> Any:
    """``model(inputs, **kwargs)``, or ``model(**inputs, **kwargs)`` for a mapping."""
    if isinstance(inputs, Mapping):
        return model(**inputs, **kwargs)
    return model(inputs, **kwargs)


def batch_labels(batch: Any, where: str) -> torch.Tensor:
    """The labels of a collated batch: ``y`` of ``(x, y)`` items, or the ``"labels"`` key of mapping items."""
    if isinstance(batch, Mapping):
        if "labels" in batch:
            return batch["labels"]
    elif isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) >= 2:
        return batch[1]
    raise ValueError(
        f"{where}: predict_labels=False needs labelled items, (x, y) pairs or mappings with a 'labels' key; "
        f"got a batch of type {type(batch).__name__}"
    )


def dataset_length(where: str, name: str, dataset: Any) -> int:
    """``len(dataset)``, or a ``TypeError`` naming the argument when it is not a sized, map-style dataset."""
    try:
        return len(dataset)
    except TypeError:
        raise TypeError(
            f"{where}: expected `{name}` to be a map-style dataset (with __len__ and __getitem__), a tensor or a "
            f"TensorDataset, got {type(dataset).__name__}"
            + (" of 0 dimensions" if isinstance(dataset, torch.Tensor) else "")
        ) from None


def as_logits(output: Any, rows: int, nclasses: int, where: str) -> torch.Tensor:
    """The ``[rows, nclasses]`` floating logits of a model output: the output itself, its ``.logits`` (a Hugging
    Face-style output object) or its ``"logits"`` key (a mapping).

    Raises:
        TypeError: the logits are not a floating tensor; for other output types the message says how to wrap the
            model.
        ValueError: their shape is not ``[rows, nclasses]``; the message names both class counts.
    """
    if not isinstance(output, torch.Tensor):
        if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
            output = output["logits"]
        elif isinstance(getattr(output, "logits", None), torch.Tensor):
            output = output.logits
        else:
            raise TypeError(
                f"{where}: expected the model to return a floating tensor of logits, got {type(output).__name__} "
                "(an object with a .logits tensor or a mapping with a 'logits' key works too); wrap the model in an "
                "nn.Module whose forward returns the logits tensor, e.g. `return self.model(x)[0]`"
            )
    if not output.is_floating_point():
        raise TypeError(
            f"{where}: expected the model to return a floating tensor of logits, got a {output.dtype} tensor"
        )
    if output.dim() != 2:
        raise ValueError(
            f"{where}: expected the model to return logits of shape [batch, nclasses] = [{rows}, {nclasses}], "
            f"got shape {tuple(output.shape)}"
        )
    if output.shape[1] != nclasses:
        raise ValueError(
            f"{where}: the model outputs {output.shape[1]} classes (logits of shape {tuple(output.shape)}) but "
            f"nclasses = {nclasses}; pass nclasses={output.shape[1]} or fix the model's last layer"
        )
    if output.shape[0] != rows:
        raise ValueError(f"{where}: the model returned {output.shape[0]} rows of logits for a batch of {rows} samples")
    return output


def without_labels(inputs: Any) -> Any:
    """A mapping batch without its ``"labels"`` key (a new dict; the batch is untouched); other inputs as given."""
    if isinstance(inputs, Mapping):
        return {key: value for key, value in inputs.items() if key != "labels"}
    return inputs
