"""Validation of a strategy's ``args`` and of ``select``'s budget, with errors that name the offending key.

Values are checked when the strategy is built (fail fast) and again when a public method resolves them
(:mod:`._settings`), because DISTIL's API lets the user change ``strategy.args``, ``strategy.n_drop`` or
``strategy.device`` between calls.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..ops import is_bool

__all__ = [
    "AMP_DTYPES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MC_DROPOUT",
    "DEFAULT_N_DROP",
    "DEFAULT_STREAM_BUFFER_SIZE",
    "MC_DROPOUTS",
    "MC_MODES",
    "NAN_POLICIES",
    "check_amp_dtype",
    "check_args",
    "check_budget",
    "check_device",
    "check_int",
    "check_mc_dropout_args",
    "check_mc_head",
    "check_throughput_args",
    "default_device",
    "default_loss",
    "distributed_flag",
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
    # bool is an int subclass, and numpy's bool_ and bool tensors have __index__: all almost surely a mistake here.
    if is_bool(value):
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


def check_device(where: str, name: str, value: Any) -> torch.device:
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
        check_device(where, "args['device']", checked["device"])
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
    # Scale-out across processes (torch.distributed): see distributed_flag below.
    if "distributed" in checked:
        distributed_flag(where, checked)
    # Throughput of the MC passes (stacked passes, head-only MC, autocast, fetching): see check_throughput_args.
    check_throughput_args(where, checked)
    # Where the MC passes' dropout masks come from (torch's generator or keyed): see check_mc_dropout_args.
    check_mc_dropout_args(where, checked)
    return checked


def default_loss() -> Callable[..., torch.Tensor]:
    """DISTIL's default loss, kept for API parity (used by ``get_grad_embedding``)."""
    return F.cross_entropy


# ----------------------------------------------------------------------------------------------------------------
# Scale-out across processes (torch.distributed). Read before the other settings: it decides whether a call talks to
# the other ranks at all.


def distributed_flag(where: str, args: Mapping[str, Any]) -> bool | None:
    """``args['distributed']``: ``None`` (default: use torch.distributed's default process group when one of more
    than one process is initialized), ``True`` (require one) or ``False`` (never: select in this process alone)."""
    value = args.get("distributed")
    if value is not None and not isinstance(value, bool):
        raise TypeError(
            f"{where}: expected args['distributed'] to be True, False or None, got {type(value).__name__} {value!r}"
        )
    return value


# ----------------------------------------------------------------------------------------------------------------
# Throughput of the MC passes: none of these keys changes what is computed, only how (except amp_dtype, which changes
# the forwards' dtype), and DISTIL's reproduction (reproduce_distil) ignores them or refuses them.

AMP_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def check_amp_dtype(where: str, value: Any) -> torch.dtype | None:
    if value is None:
        return None
    if isinstance(value, torch.dtype) and value in (torch.bfloat16, torch.float16):
        return value
    if isinstance(value, str) and value in AMP_DTYPES:
        return AMP_DTYPES[value]
    raise ValueError(
        f"{where}: expected args['amp_dtype'] to be None, torch.bfloat16 or torch.float16 (or one of "
        f"{', '.join(repr(name) for name in AMP_DTYPES)}), got {value!r}"
    )


def check_mc_head(where: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        if isinstance(value, str) and not value:
            raise ValueError(f"{where}: expected args['mc_head'] to name a module, got an empty string")
        return value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(part, torch.nn.Module) for part in value)
    ):
        return tuple(value)
    raise TypeError(
        f"{where}: expected args['mc_head'] to be a (trunk, head) pair of nn.Modules or the name of the module "
        f"after which dropout begins, got {type(value).__name__} {value!r}"
    )


def check_throughput_args(where: str, args: Mapping[str, Any]) -> None:
    """Checks the throughput keys present in ``args`` (types and values; the model is checked at use)."""
    if args.get("mc_memory_budget") is not None:
        check_int(where, "args['mc_memory_budget']", args["mc_memory_budget"], 0)
    if "num_workers" in args:
        check_int(where, "args['num_workers']", args["num_workers"], 0)
    check_mc_head(where, args.get("mc_head"))
    check_amp_dtype(where, args.get("amp_dtype"))
    sampler = args.get("batch_sampler")
    if sampler is not None and (isinstance(sampler, (str, bytes)) or not hasattr(sampler, "__iter__")):
        raise TypeError(
            f"{where}: expected args['batch_sampler'] to be an iterable of index lists (e.g. a "
            f"torch.utils.data.BatchSampler), got {type(sampler).__name__}"
        )
    if args.get("reproduce_distil", False):
        for key in ("mc_head", "amp_dtype", "batch_sampler"):
            if args.get(key) is not None:
                raise ValueError(
                    f"{where}: args['reproduce_distil'] = True runs DISTIL's exact loop and cannot be combined with "
                    f"args[{key!r}]; drop one of the two keys"
                )


# ----------------------------------------------------------------------------------------------------------------
# Where the MC passes' dropout masks come from. Kept apart from the throughput keys: keyed dropout changes which masks are drawn (not their distribution), so a seed's selection
# differs from torch's dropout; in exchange it no longer depends on batch_size, stream_buffer_size, stacking or the
# world size.

#: ``args['mc_dropout']``: ``"torch"`` (torch's own dropout, the global generator) or ``"keyed"``
#: (:func:`entropy_al.keyed_mc_dropout`: each mask a pure function of (mc_seed, pool index, pass, element)).
MC_DROPOUTS = ("torch", "keyed")
#: The default of ``args['mc_dropout']``. Kept ``"torch"``: see benchmarks/RESULTS.md, "Keyed MC dropout in select()".
DEFAULT_MC_DROPOUT = "torch"
_SEED_RANGE = (-(1 << 63), 1 << 64)


def check_mc_dropout_args(where: str, args: Mapping[str, Any]) -> None:
    """Checks ``mc_dropout`` and ``mc_seed`` where present, and that keyed dropout is not asked of DISTIL's loop."""
    if "mc_dropout" in args:
        _check_choice(where, "mc_dropout", args["mc_dropout"], MC_DROPOUTS)
    if args.get("mc_seed") is not None:
        seed = args["mc_seed"]
        if isinstance(seed, bool) or type(seed).__name__ == "bool_" or isinstance(seed, torch.Tensor):
            raise TypeError(f"{where}: expected args['mc_seed'] to be an int, got {type(seed).__name__} {seed!r}")
        try:
            number = operator.index(seed)
        except TypeError:
            raise TypeError(
                f"{where}: expected args['mc_seed'] to be an int, got {type(seed).__name__} {seed!r}"
            ) from None
        if not _SEED_RANGE[0] <= number < _SEED_RANGE[1]:
            raise ValueError(f"{where}: expected args['mc_seed'] to be an int in [-2**63, 2**64), got {number}")
    if args.get("reproduce_distil", False) and args.get("mc_dropout", DEFAULT_MC_DROPOUT) == "keyed":
        raise ValueError(
            f"{where}: args['reproduce_distil'] = True reproduces DISTIL's masks with torch's own dropout and cannot "
            "be combined with args['mc_dropout'] = 'keyed'; drop one of the two keys"
        )
