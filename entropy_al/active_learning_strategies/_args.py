"""Validation of a strategy's ``args`` and of ``select``'s budget, with errors that name the offending key.

Values are checked when the strategy is built (fail fast) and again when a method uses them, because DISTIL's
API lets the user change ``strategy.args``, ``strategy.n_drop`` or ``strategy.device`` between calls.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_N_DROP",
    "DEFAULT_STREAM_BUFFER_SIZE",
    "MC_MODES",
    "NAN_POLICIES",
    "RunSettings",
    "check_args",
    "check_budget",
    "check_int",
    "default_device",
    "default_loss",
    "run_settings",
]

DEFAULT_BATCH_SIZE = 1
DEFAULT_N_DROP = 10
DEFAULT_STREAM_BUFFER_SIZE = 10000
MC_MODES = ("dropout", "train")
NAN_POLICIES = ("raise", "omit")


def check_int(where: str, name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as a Python int ``>= minimum``.

    Accepts anything with ``__index__`` (Python and numpy integers, integer 0-d tensors); rejects bools, floats
    (even integral ones) and strings with a ``TypeError``, and values below ``minimum`` with a ``ValueError``.
    """
    # bool is an int subclass and numpy's bool_ has __index__ in old numpy: both are almost surely a mistake here.
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise TypeError(f"{where}: expected {name} to be an int, got bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{where}: expected {name} to be an int, got {type(value).__name__} {value!r}") from None
    if number < minimum:
        bound = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{where}: expected {name} to be {bound}, got {number}")
    return number


def check_budget(where: str, budget: Any) -> int:
    """Validates ``select``'s budget: a non-negative integer (numpy integers accepted)."""
    return check_int(where, "`budget`", budget, 0)


def _check_choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{where}: expected args[{key!r}] to be one of {options}, got {value!r}")
    return value


def _check_bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: expected args[{key!r}] to be a bool, got {type(value).__name__} {value!r}")
    return value


def _check_device(where: str, name: str, value: Any) -> torch.device:
    try:
        return torch.device(value)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}: expected {name} to be a torch device such as 'cpu' or 'cuda', got {value!r}"
        ) from exc


def default_device() -> str:
    """DISTIL's default: ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_args(where: str, args: Any) -> dict[str, Any]:
    """Checks every known key present in ``args`` and returns a new dict (the caller's is never touched).

    Unknown keys pass through untouched, as in DISTIL, where one ``args`` dict often serves several strategies.
    """
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise TypeError(f"{where}: expected `args` to be a dict, got {type(args).__name__}")
    checked = dict(args)
    for key in ("batch_size", "n_drop", "stream_buffer_size"):
        if key in checked:
            check_int(where, f"args[{key!r}]", checked[key], 1)
    if "device" in checked:
        _check_device(where, "args['device']", checked["device"])
    if "loss" in checked and not callable(checked["loss"]):
        raise TypeError(f"{where}: expected args['loss'] to be callable, got {type(checked['loss']).__name__}")
    if "mc_mode" in checked:
        _check_choice(where, "mc_mode", checked["mc_mode"], MC_MODES)
    if "nan_policy" in checked:
        _check_choice(where, "nan_policy", checked["nan_policy"], NAN_POLICIES)
    for key in ("reproduce_distil", "progress"):
        if key in checked:
            _check_bool(where, key, checked[key])
    if checked.get("reproduce_distil", False) and checked.get("mc_mode", "train") != "train":
        raise ValueError(
            f"{where}: args['reproduce_distil'] = True reproduces DISTIL's whole-model train mode and cannot be "
            f"combined with args['mc_mode'] = {checked['mc_mode']!r}; drop one of the two keys"
        )
    return checked


@dataclass(frozen=True)
class RunSettings:
    """The settings one method call runs with, resolved from ``strategy.args`` and the strategy's attributes.

    Attributes:
        batch_size: samples per model forward.
        device: where the model runs and the scores live.
        mc_mode: ``"dropout"`` (only dropout modules stochastic) or ``"train"`` (DISTIL's whole-model train).
        reproduce_distil: follow DISTIL's pass-major loop and random-number use exactly.
        nan_policy: ``"raise"`` or ``"omit"`` for samples whose logits are NaN or ``+inf``.
        progress: show a tqdm bar over the samples.
    """

    batch_size: int
    device: torch.device
    mc_mode: str
    reproduce_distil: bool
    nan_policy: str
    progress: bool


def run_settings(where: str, args: Mapping[str, Any], device: Any) -> RunSettings:
    """Resolves the settings of one call from the strategy's (possibly user-edited) ``args`` and ``device``."""
    checked = check_args(where, args)
    reproduce = checked.get("reproduce_distil", False)
    return RunSettings(
        batch_size=check_int(where, "args['batch_size']", checked.get("batch_size", DEFAULT_BATCH_SIZE), 1),
        device=_check_device(where, "the strategy's device", device),
        mc_mode=checked.get("mc_mode", "train" if reproduce else "dropout"),
        reproduce_distil=reproduce,
        nan_policy=checked.get("nan_policy", "raise"),
        progress=checked.get("progress", False),
    )


def default_loss() -> Callable[..., torch.Tensor]:
    """DISTIL's default loss, kept for API parity (used by ``get_grad_embedding``)."""
    return F.cross_entropy
