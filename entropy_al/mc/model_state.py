"""Context managers that set a model's train/eval flags for inference and put everything back afterwards.

Whatever happens inside (including an exception from the model halfway through a pool), on exit every module's
``training`` flag, every parameter and every buffer is exactly as it was on entry: the same tensor objects, with
the same values. DISTIL calls ``model.train()`` and never restores it, so its selection silently overwrites
BatchNorm running statistics; these managers exist to make that impossible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["DROPOUT_LIKE", "eval_mode", "is_dropout_like", "mc_mode", "preserved_state"]

# Modules whose train mode differs from eval mode only by dropout: the transformer modules use attention dropout
# (a float, not a submodule) and take a fused "fast path" in eval that skips their Dropout children altogether.
DROPOUT_LIKE: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
)


def is_dropout_like(module: nn.Module) -> bool:
    """Whether ``module``'s train mode only adds dropout (see :data:`DROPOUT_LIKE`)."""
    return isinstance(module, DROPOUT_LIKE)


def _changed(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[bool]:
    """Whether each (current, snapshot) pair differs, with one host synchronization per device."""
    changed = [_retyped(current, saved) for current, saved in pairs]
    by_device: dict[torch.device, list[int]] = {}
    for position, (current, _) in enumerate(pairs):
        if not changed[position]:
            by_device.setdefault(current.device, []).append(position)
    for positions in by_device.values():
        differs = torch.stack([(pairs[i][0] != pairs[i][1]).any() for i in positions]).tolist()
        for position, flag in zip(positions, differs, strict=True):
            changed[position] = flag
    return changed


def _retyped(current: torch.Tensor, saved: torch.Tensor) -> bool:
    return current.shape != saved.shape or current.dtype != saved.dtype or current.device != saved.device


# The models inside a preserved_state block: id → (owning thread, depth). A second thread entering on the same model
# would save the first one's MC flags as "the model's state" and restore those; the owning thread may re-enter (a
# DISTIL-style acquire_scores runs the MC methods from inside select).
_IN_USE: dict[int, tuple[int, int]] = {}
_IN_USE_LOCK = threading.Lock()


@contextmanager
def _exclusive(model: nn.Module) -> Iterator[None]:
    me = threading.get_ident()
    key = id(model)
    with _IN_USE_LOCK:
        owner, depth = _IN_USE.get(key, (me, 0))
        if owner != me:
            raise RuntimeError(
                f"{type(model).__name__}: this model is already in use by a select(), MC or prediction call in "
                "another thread; its train/eval flags and weights cannot be shared by concurrent calls. Give each "
                "thread its own copy of the model (copy.deepcopy(model)) or wait for the other call to return"
            )
        _IN_USE[key] = (me, depth + 1)
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            if depth == 0:
                del _IN_USE[key]
            else:
                _IN_USE[key] = (me, depth)


@contextmanager
def preserved_state(model: nn.Module, *, parameters: bool = True) -> Iterator[None]:
    """Restores every module's ``training`` flag, buffers and (optionally) parameters on exit.

    Tensors are restored in place, into the original objects (an optimizer holding them keeps working), and
    only where their values changed, so that untouched tensors keep their autograd version counters. A forward
    that moved them to another dtype or device (``self.to(x.dtype)``) gets them back as they were.

    One thread at a time: entering on a model that another thread is inside raises a ``RuntimeError``; the same
    thread may nest blocks.

    Args:
        model: the module tree to protect.
        parameters: also snapshot the parameters. This costs one copy of the weights for the duration of the
            block; eval-mode inference never writes parameters, so eval-only callers pass ``False``.
    """
    with _exclusive(model):
        yield from _preserved_state(model, parameters)


def _preserved_state(model: nn.Module, parameters: bool) -> Iterator[None]:
    modules = list(model.modules())
    flags = [module.training for module in modules]
    # (owner dict, name, original tensor, snapshot); shared tensors are copied once.
    slots: list[tuple[dict[str, torch.Tensor | None], str, torch.Tensor, torch.Tensor]] = []
    copies: dict[int, torch.Tensor] = {}
    for module in modules:
        owners = [module._buffers] + ([module._parameters] if parameters else [])
        for owner in owners:
            for name, tensor in owner.items():
                if tensor is None:
                    continue
                if id(tensor) not in copies:
                    copies[id(tensor)] = tensor.detach().clone()
                slots.append((owner, name, tensor, copies[id(tensor)]))
    try:
        yield
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.training = flag
        unique: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for owner, name, tensor, saved in slots:
            if owner.get(name) is not tensor:
                owner[name] = tensor  # the forward re-bound the attribute: put the original object back
            unique[id(tensor)] = (tensor, saved)
        pairs = list(unique.values())
        with torch.no_grad():
            for (tensor, saved), changed in zip(pairs, _changed(pairs), strict=True):
                if not changed:
                    continue
                if not _retyped(tensor, saved):
                    tensor.copy_(saved)
                elif tensor.dtype == saved.dtype and tensor.device == saved.device:
                    tensor.set_(saved)  # resized in place: take the snapshot's storage and shape back
                else:  # moved to another dtype or device (Module.to swaps .data): swap the snapshot back in
                    tensor.data = saved


@contextmanager
def mc_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Puts ``model`` in an MC-dropout mode for the block, then restores its full state (:func:`preserved_state`).

    Args:
        model: the network.
        mode: ``"dropout"``: ``model.eval()``, then only the modules of :data:`DROPOUT_LIKE` in train mode, so
            BatchNorm uses its running statistics and scores do not depend on batch composition (whether the
            passes then differ is checked on the logits, by :func:`.engine.mc_logit_blocks`). ``"train"``:
            DISTIL's ``model.train()``.
    """
    with preserved_state(model):
        if mode == "train":
            model.train()
        elif mode == "dropout":
            model.eval()
            stochastic = [module for module in model.modules() if is_dropout_like(module)]
            for module in stochastic:
                module.training = True  # set the flag directly: .train() would also flip the children
        else:
            raise ValueError(f"mc_mode: expected 'dropout' or 'train', got {mode!r}")
        yield


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block; flags and buffers restored on exit (eval never writes parameters)."""
    with preserved_state(model, parameters=False):
        model.eval()
        yield
