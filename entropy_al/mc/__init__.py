"""The MC engine: stochastic forward passes of a model over a dataset, as ``[n_drop, B, C]`` logit blocks.

Entry point: :func:`mc_logit_blocks` (model, dataset or an index range of it, resolved :class:`MCPlan`). It owns
the model's MC mode and its restoration (:mod:`.model_state`), keyed dropout (:mod:`.keyed`), head-only MC
(:mod:`.heads`), stacked passes (:mod:`.stacking`), fetching and moving batches (:mod:`.batches`,
:mod:`.tensor_source`, :mod:`.transfer`), the batch-major loop (:mod:`.passes`) and DISTIL's pass-major one
(:mod:`.distil_loop`). Deterministic forwards share the fetching: :func:`eval_forwards` under :func:`eval_mode`.
Nothing here knows about strategies or selection.
"""

from .batches import iter_batches
from .deterministic import eval_forwards
from .engine import mc_logit_blocks
from .heads import HeadSplit, resolve_split
from .items import as_logits, batch_labels, call_model, dataset_length, to_device, without_labels
from .keyed import KeyedMCDropout, UnkeyableDropoutError, keyed_mc_dropout
from .model_state import eval_mode, mc_mode, preserved_state
from .passes import block_rows
from .plan import MCPlan, autocast_for, default_memory_budget
from .progress import ProgressBar
from .stacking import PassGrouping, stack_copies, stackable, uses_batch_statistics
from .tensor_source import tensor_source

__all__ = [
    "HeadSplit",
    "KeyedMCDropout",
    "MCPlan",
    "PassGrouping",
    "ProgressBar",
    "UnkeyableDropoutError",
    "as_logits",
    "autocast_for",
    "batch_labels",
    "block_rows",
    "call_model",
    "dataset_length",
    "default_memory_budget",
    "eval_forwards",
    "eval_mode",
    "iter_batches",
    "keyed_mc_dropout",
    "mc_logit_blocks",
    "mc_mode",
    "preserved_state",
    "resolve_split",
    "stack_copies",
    "stackable",
    "tensor_source",
    "to_device",
    "uses_batch_statistics",
    "without_labels",
]
