"""What one dropout call is, for keyed MC dropout: its kind, its arguments, its site seed, and whether it can be keyed.

:mod:`entropy_al.mc.keyed` patches modules and intercepts functional calls; this module holds the tables and
checks it consults, and maps each kind of dropout to its keyed op (:mod:`entropy_al.keyed`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..keyed import keyed_alpha_dropout, keyed_dropout, keyed_feature_dropout

__all__ = [
    "FUNCTIONAL",
    "KEYED_MODULES",
    "MODULE_KINDS",
    "UnkeyableDropoutError",
    "apply_kind",
    "check_layout",
    "site_seed",
    "unkeyable_dropout",
]


class UnkeyableDropoutError(RuntimeError):
    """A dropout in the forward that keyed MC dropout cannot key (layout, or dropout inside a torch function).

    Raised at the first such call, before anything is computed with torch's generator: a caller that wants a
    fallback catches it on its first forward and reruns with torch's own dropout.
    """


_MASK64 = (1 << 64) - 1

# The stock forward of each keyed module class -> the kind of dropout it computes.
MODULE_KINDS: dict[Callable, str] = {
    nn.Dropout.forward: "dropout",
    nn.Dropout1d.forward: "dropout1d",
    nn.Dropout2d.forward: "dropout2d",
    nn.Dropout3d.forward: "dropout3d",
    nn.AlphaDropout.forward: "alpha_dropout",
    nn.FeatureAlphaDropout.forward: "feature_alpha_dropout",
}
KEYED_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

_CHANNEL_KINDS = ("dropout1d", "dropout2d", "dropout3d", "feature_dropout", "feature_alpha_dropout")
# Input dims that torch treats as unbatched (it adds a batch dim of 1): no row to key them by.
_UNBATCHED_DIMS = {"dropout1d": 2, "dropout3d": 4}


def site_seed(seed: int, site: int) -> int:
    """The seed of dropout site ``site`` (call order in a forward) under ``seed``: splitmix64 of
    ``seed + (site + 1) * 0x9E3779B97F4A7C15``, as an int64."""
    z = (seed + (site + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return z - (1 << 64) if z >= (1 << 63) else z


def apply_kind(kind: str, x: torch.Tensor, p: float, seed: int, ids: torch.Tensor, passes: torch.Tensor):
    if kind == "dropout":
        return keyed_dropout(x, p, seed, ids, passes)
    if kind == "alpha_dropout":
        return keyed_alpha_dropout(x, p, seed, ids, passes)
    if kind == "feature_alpha_dropout":
        return keyed_alpha_dropout(x, p, seed, ids, passes, feature=True)
    return keyed_feature_dropout(x, p, seed, ids, passes)


def _bind_functional(training_default: bool):
    """(input, p, training, inplace) of an F.* dropout call."""

    def bind(input, p=0.5, training=training_default, inplace=False):
        return input, p, training, inplace

    return bind


def _bind_aten(inplace: bool):
    """(input, p, training, inplace) of a torch.* dropout call (all arguments required)."""

    def bind(input, p, train):
        return input, p, train, inplace

    return bind


def _functional_table() -> dict[Callable, tuple[str, Callable, str]]:
    table = {
        F.dropout: ("dropout", _bind_functional(True)),
        F.dropout1d: ("dropout1d", _bind_functional(True)),
        F.dropout2d: ("dropout2d", _bind_functional(True)),
        F.dropout3d: ("dropout3d", _bind_functional(True)),
        F.alpha_dropout: ("alpha_dropout", _bind_functional(False)),
        F.feature_alpha_dropout: ("feature_alpha_dropout", _bind_functional(False)),
    }
    for name, kind in (
        ("dropout", "dropout"),
        ("feature_dropout", "feature_dropout"),
        ("alpha_dropout", "alpha_dropout"),
        ("feature_alpha_dropout", "feature_alpha_dropout"),
    ):
        table[getattr(torch, name)] = (kind, _bind_aten(False))
        table[getattr(torch, name + "_")] = (kind, _bind_aten(True))
    return {
        func: (kind, bind, f"{'torch.nn.functional' if func.__module__ == F.__name__ else 'torch'}.{func.__name__}")
        for func, (kind, bind) in table.items()
    }


FUNCTIONAL = _functional_table()


def _argument(args: tuple, kwargs: dict, position: int, name: str, default=None):
    return args[position] if len(args) > position else kwargs.get(name, default)


_RNN_FUNCTIONS = (torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu)


def unkeyable_dropout(func: Callable, args: tuple, kwargs: dict) -> str | None:
    """What a call would drop with torch's generator, out of the mode's reach, or None.

    The mode only sees top-level calls: the dropout inside a torch function that it passes through (attention
    weights in multi_head_attention_forward, between the layers of an RNN) runs unkeyed, so such calls are refused.
    """
    if func is F.scaled_dot_product_attention:
        dropout_p = _argument(args, kwargs, 4, "dropout_p", 0.0)
        if dropout_p > 0:
            return f"torch.nn.functional.scaled_dot_product_attention with dropout_p = {dropout_p}"
    elif func is F.multi_head_attention_forward:
        dropout_p = _argument(args, kwargs, 10, "dropout_p", 0.0)
        if dropout_p > 0 and _argument(args, kwargs, 13, "training", True):
            return f"attention dropout (torch.nn.functional.multi_head_attention_forward, dropout_p = {dropout_p})"
    elif func in _RNN_FUNCTIONS and len(args) >= 8:  # nn.RNNBase passes every argument by position
        shift = 0 if isinstance(args[3], bool) else 1  # packed sequences have batch_sizes second
        num_layers, dropout, train = args[4 + shift], args[5 + shift], args[6 + shift]
        if dropout > 0 and train and num_layers > 1:
            return f"the dropout between the layers of torch.{func.__name__} (dropout = {dropout})"
    elif func is torch.native_dropout:
        if _argument(args, kwargs, 2, "train") is not False:
            return "torch.native_dropout"
    return None


def check_layout(where: str, kind: str, x: torch.Tensor, rows: int) -> None:
    if kind in _CHANNEL_KINDS and (
        x.dim() < 2 or x.dim() == _UNBATCHED_DIMS.get(kind) or (kind == "dropout1d" and x.dim() != 3)
    ):
        raise UnkeyableDropoutError(
            f"keyed_mc_dropout: {where} got an input of shape {list(x.shape)}: keyed channel dropout needs a "
            "batched [N, C, ...] input, samples first"
        )
    if x.dim() == 0 or x.shape[0] != rows:
        raise UnkeyableDropoutError(
            f"keyed_mc_dropout: {where} got an input of shape {list(x.shape)} whose dim 0 is not the {rows} rows "
            "of the batch: keyed dropout needs the samples first (e.g. batch_first=True); this layout cannot be "
            "keyed"
        )
