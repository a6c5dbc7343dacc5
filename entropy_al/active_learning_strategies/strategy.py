"""``Strategy``: DISTIL's base class (same constructor, attributes and methods), on entropy_al's machinery.

Differences from DISTIL, all deliberate: the caller's ``args`` dict is never mutated; every method leaves the
model's train/eval flags, parameters and buffers as it found them (DISTIL leaves the model in train mode after an
MC method); any ``Mapping`` item is accepted and ``(x, y)`` items use ``x``; the MC methods default to dropout-only
stochasticity (``args['mc_mode']``) and can reproduce DISTIL's loop exactly (``args['reproduce_distil']``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..mc import as_logits, batch_labels, block_rows, call_model, dataset_length, eval_mode, mc_logit_blocks, to_device
from ._embeddings import GRAD_EMBEDDING_TYPES, embedding_dim, last_layer_gradients, logits_and_embedding
from ._features import captured_layer
from ._runs import eval_outputs, mc_plan, prepare_call
from ._settings import CallSettings
from ._validation import DEFAULT_BATCH_SIZE, check_args, check_int, default_device, default_loss

__all__ = ["Strategy", "dict_to"]


def dict_to(dictionary: Any, device: str | torch.device) -> Any:
    """DISTIL's helper: moves every value of a ``dict`` that has a ``.to`` method to ``device``, in place, and
    returns the dict; anything that is not a ``dict`` is returned unchanged."""
    if isinstance(dictionary, dict):
        for key, value in dictionary.items():
            if hasattr(value, "to"):
                dictionary[key] = value.to(device=device)
    return dictionary


class Strategy:
    """Base class of the active-learning strategies, with DISTIL's constructor and helpers.

    Args:
        labeled_dataset: the labelled training set (kept for API parity).
        unlabeled_dataset: the pool; a map-style dataset whose items are tensors, mappings (the model is called
            as ``model(**item)``) or ``(x, y)`` pairs.
        net: the model; ``net(x)`` returns ``[batch, nclasses]`` logits.
        nclasses: number of classes, the width of the model's output.
        args: optional settings, never modified:

            - ``batch_size`` (int, default 1): samples per forward.
            - ``device`` (str or torch.device, default ``"cuda"`` if available else ``"cpu"``): where the model
              runs (it is moved there, as in DISTIL) and the scores live.
            - ``loss`` (callable, default ``F.cross_entropy``): used by :meth:`get_grad_embedding`, called as
              ``loss(logits, targets, reduction="sum")``.
            - ``n_drop`` (int, default 10) and ``stream_buffer_size`` (int, default 10000): see the subclasses.
            - ``mc_mode`` (``"dropout"`` default, or ``"train"``): MC passes with only the dropout modules
              stochastic (BatchNorm uses its running statistics), or DISTIL's whole-model ``train()``.
            - ``reproduce_distil`` (bool, default False): follow DISTIL's pass-major loop and random-number use,
              in train mode, so that the same seed on CPU gives DISTIL's selection. Slower.
            - ``nan_policy`` (``"raise"`` default, or ``"omit"``): what scoring does with samples whose logits
              are NaN, ``+inf`` or all ``-inf``: raise a ``ValueError`` naming the first pool index, or rank
              them last with one warning.
            - ``progress`` (bool, default False): a tqdm bar over the samples during MC scoring.

            Throughput of the MC passes (see :mod:`entropy_al.mc.passes`). ``amp_dtype`` aside, none changes what is computed:
            a deterministic model gets the same selection, a dropout model scores of the same distribution (the
            masks are drawn in another order):

            - ``mc_memory_budget`` (int bytes, default 2 MiB on the CPU, cache-sized; on CUDA 1 GiB or a quarter
              of the free memory): activation memory one forward may use when it stacks several MC passes of a
              batch (each copy with its own dropout masks). The passes per forward are ``min(n_drop, budget //
              (batch_size × activation bytes per sample))``, at least 1, the bytes measured on the first pass of a
              call (input plus every submodule's output). 0 runs one pass per forward. Stacking is skipped when a
              module would normalize with batch statistics (BatchNorm in ``mc_mode 'train'``), which copies would
              share.
            - ``mc_head`` (default None): head-only MC. A ``(trunk, head)`` pair of submodules with
              ``model(x) == head(trunk(x))``, or the (dotted) name of the module of an ``nn.Sequential`` model after
              which dropout begins. The trunk runs once per batch, the head ``n_drop`` times. A trunk holding a
              dropout module, or a dropout module outside the head, is a ``ValueError``.
            - ``amp_dtype`` (``None`` default, ``torch.bfloat16``/``"bf16"`` or ``torch.float16``/``"fp16"``): run
              the forwards under ``torch.autocast``; scores still accumulate in float32. ``ValueError`` for other
              values or when the device's autocast does not support the dtype. float16 logits beyond ±65504
              become ``inf`` (broken output under ``nan_policy``): prefer bfloat16.
            - ``num_workers`` (int, default 0): DataLoader workers for datasets fetched item by item (tensors,
              ``TensorDataset`` and their ``Subset`` are sliced per batch instead, without a DataLoader).
            - ``batch_sampler`` (default None): an iterable of index lists (e.g. a ``BatchSampler``, or batches
              bucketed by sequence length) that the MC methods use instead of consecutive ``batch_size`` batches,
              in its order. It must yield every index of the dataset scored exactly once.

            Where the MC passes' dropout masks come from (:mod:`entropy_al.keyed_mc`):

            - ``mc_dropout`` (``"torch"`` default, or ``"keyed"``): torch's own dropout (the global generator), or
              keyed dropout: every mask of the model's dropout modules and functional dropout calls is a pure
              function of (``mc_seed``, the sample's pool index, the pass, the element), so a seed's scores and
              selection are the same whatever ``batch_size``, ``stream_buffer_size``, ``mc_memory_budget``,
              ``batch_sampler``, ``mc_head``'s stacking or the number of ranks (up to float rounding of the model's
              own kernels, which may differ with the batch size). The modules are restored on exit, also after an
              exception. A dropout it cannot key (samples not in dim 0, attention or RNN inter-layer dropout) raises
              :class:`entropy_al.UnkeyableDropoutError` at the first forward. Not with ``reproduce_distil``.
            - ``mc_seed`` (int in ``[-2**63, 2**64)``, default None): the keyed masks' seed; ``None`` draws one
              from torch's global generator once per call (so ``torch.manual_seed`` decides it; under
              torch.distributed rank 0's draw is used by every rank). Ignored with ``mc_dropout = "torch"``.

    Attributes:
        labeled_dataset, unlabeled_dataset, model, target_classes, device, loss: as given (with defaults).
        args: a copy of ``args`` with ``batch_size`` filled in, as DISTIL exposes it; edits apply to later calls.
    """

    def __init__(
        self,
        labeled_dataset: Dataset,
        unlabeled_dataset: Dataset,
        net: nn.Module,
        nclasses: int,
        args: Mapping[str, Any] | None = None,
    ):
        where = type(self).__name__
        self.labeled_dataset = labeled_dataset
        self.unlabeled_dataset = unlabeled_dataset
        self.model = net
        self.target_classes = check_int(where, "`nclasses`", nclasses, 1)
        self.args: dict[str, Any] = check_args(where, args)
        self.args.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        self.device: str | torch.device = self.args.get("device", default_device())
        self.loss: Callable[..., torch.Tensor] = self.args.get("loss", default_loss())

    def select(self, budget: int) -> list[int]:
        """Indices into ``unlabeled_dataset`` of the ``budget`` samples to label next."""
        raise NotImplementedError(f"{type(self).__name__} does not implement select()")

    def update_data(self, labeled_dataset: Dataset, unlabeled_dataset: Dataset) -> None:
        """Replaces the labelled set and the pool."""
        self.labeled_dataset = labeled_dataset
        self.unlabeled_dataset = unlabeled_dataset

    def update_queries(self, query_dataset: Dataset) -> None:
        """Stores a query set (used by DISTIL's targeted strategies)."""
        self.query_dataset = query_dataset

    def update_privates(self, private_dataset: Dataset) -> None:
        """Stores a private set (used by DISTIL's privacy-aware strategies)."""
        self.private_dataset = private_dataset

    def update_model(self, clf: nn.Module) -> None:
        """Replaces the model."""
        self.model = clf

    # ----------------------------------------------------------------------------------------------------------
    # Shared machinery: one resolution of the settings per public call, one MC plan, the MC engine.

    def _prepare(self, method: str) -> CallSettings:
        settings, self.model = prepare_call(f"{type(self).__name__}.{method}", self.args, self.device, self.model)
        return settings

    def _mc_probabilities(self, method: str, dataset: Dataset, n_drop: Any, split: bool) -> torch.Tensor:
        settings = self._prepare(method)
        num_samples = dataset_length(settings.where, "to_predict_dataset", dataset)
        plan = mc_plan(self.model, settings, self.target_classes, n_drop, num_samples, dataset)
        shape = (plan.n_drop, num_samples, self.target_classes) if split else (num_samples, self.target_classes)
        probs = torch.zeros(shape, dtype=torch.float32, device=settings.device)
        with contextlib.closing(mc_logit_blocks(self.model, dataset, plan)) as blocks:
            for offset, logits in blocks:
                block = torch.softmax(logits.float(), dim=2)
                rows = block_rows(offset, logits.shape[1], probs.device)
                if split:
                    probs[:, rows] = block
                else:
                    probs[rows] = block.mean(dim=0)
        return probs

    # ----------------------------------------------------------------------------------------------------------
    # DISTIL's prediction helpers

    def predict(self, to_predict_dataset: Dataset) -> torch.Tensor:
        """Most likely class of every sample, in eval mode: int64 ``[N]`` on the device."""
        settings = self._prepare("predict")
        where = settings.where
        num_samples = dataset_length(where, "to_predict_dataset", to_predict_dataset)
        predictions = torch.zeros(num_samples, dtype=torch.int64, device=settings.device)
        with eval_mode(self.model):
            for start, stop, _, output in eval_outputs(self.model, settings, to_predict_dataset):
                predictions[start:stop] = as_logits(output, stop - start, self.target_classes, where).argmax(1)
        return predictions

    def predict_prob(self, to_predict_dataset: Dataset) -> torch.Tensor:
        """Softmax probabilities of every sample, in eval mode: float32 ``[N, nclasses]`` on the device."""
        settings = self._prepare("predict_prob")
        where = settings.where
        num_samples = dataset_length(where, "to_predict_dataset", to_predict_dataset)
        probs = torch.zeros(num_samples, self.target_classes, device=settings.device)
        with eval_mode(self.model):
            for start, stop, _, output in eval_outputs(self.model, settings, to_predict_dataset):
                probs[start:stop] = torch.softmax(as_logits(output, stop - start, self.target_classes, where), 1)
        return probs

    def predict_prob_dropout(self, to_predict_dataset: Dataset, n_drop: int) -> torch.Tensor:
        """Mean over ``n_drop`` MC passes of the softmax probabilities: float32 ``[N, nclasses]``."""
        return self._mc_probabilities("predict_prob_dropout", to_predict_dataset, n_drop, split=False)

    def predict_prob_dropout_split(self, to_predict_dataset: Dataset, n_drop: int) -> torch.Tensor:
        """Softmax probabilities of each of ``n_drop`` MC passes: float32 ``[n_drop, N, nclasses]``."""
        return self._mc_probabilities("predict_prob_dropout_split", to_predict_dataset, n_drop, split=True)

    def get_embedding(self, to_predict_dataset: Dataset) -> torch.Tensor:
        """Penultimate-layer embeddings, in eval mode: ``[N, D]`` float32.

        The model must accept ``last=True`` and then return ``(logits, embedding)``.
        """
        settings = self._prepare("get_embedding")
        where = settings.where
        dataset_length(where, "to_predict_dataset", to_predict_dataset)
        embedding: torch.Tensor | None = None
        with eval_mode(self.model):
            for start, stop, _, output in eval_outputs(self.model, settings, to_predict_dataset, last=True):
                _, features = logits_and_embedding(output, stop - start, where)
                if embedding is None:
                    embedding = torch.zeros(len(to_predict_dataset), features.shape[1], device=settings.device)
                embedding[start:stop] = features
        if embedding is None:
            return torch.zeros(0, embedding_dim(self.model), device=settings.device)
        return embedding

    def get_grad_embedding(
        self, dataset: Dataset, predict_labels: bool, grad_embedding_type: str = "bias_linear"
    ) -> torch.Tensor:
        """Per-sample gradients of the summed loss with respect to the last linear layer (BADGE's embedding).

        The model must accept ``last=True, freeze=True`` and then return ``(logits, embedding)``. Runs in eval
        mode (DISTIL uses whatever mode the model is in). With ``g = ∂ loss / ∂ logits`` (``[N, C]``, computed by
        ``args['loss']`` with ``reduction="sum"``) and ``e`` the ``[N, D]`` embedding, the result is ``g`` for
        ``"bias"``, ``g_c · e_d`` at column ``c·D + d`` for ``"linear"`` and both side by side for
        ``"bias_linear"``: float32 ``[N, C]``, ``[N, D·C]`` or ``[N, (D+1)·C]``.

        Args:
            dataset: the samples.
            predict_labels: use the model's argmax as targets; otherwise the dataset's labels (``(x, y)`` items,
                or the ``"labels"`` key of mapping items).
            grad_embedding_type: ``"bias"``, ``"linear"`` or ``"bias_linear"``.
        """
        settings = self._prepare("get_grad_embedding")
        where = settings.where
        dataset_length(where, "dataset", dataset)
        if grad_embedding_type not in GRAD_EMBEDDING_TYPES:
            raise ValueError(
                f"{where}: expected grad_embedding_type to be 'bias', 'linear' or 'bias_linear', "
                f"got {grad_embedding_type!r}"
            )
        result: torch.Tensor | None = None
        with eval_mode(self.model):
            # As DISTIL: with the dataset's labels as targets, a mapping's "labels" key is not passed to the model.
            outputs = eval_outputs(
                self.model, settings, dataset, drop_labels=not predict_labels, last=True, freeze=True
            )
            for start, stop, batch, output in outputs:
                logits, features = logits_and_embedding(output, stop - start, where)
                logits = as_logits(logits, stop - start, self.target_classes, where)
                if predict_labels:
                    targets = logits.argmax(dim=1)
                else:
                    targets = torch.as_tensor(batch_labels(batch, where)).to(settings.device)
                block = last_layer_gradients(self.loss, logits, features, targets, grad_embedding_type)
                if result is None:
                    result = torch.zeros(len(dataset), block.shape[1], device=settings.device)
                result[start:stop] = block
        if result is None:
            dim = embedding_dim(self.model)
            width = {"bias": 1, "linear": dim, "bias_linear": dim + 1}[grad_embedding_type] * self.target_classes
            return torch.zeros(0, width, device=settings.device)
        return result

    def _last_layer_backprop(
        self, model_output: torch.Tensor, l1: torch.Tensor, targets: torch.Tensor, grad_embedding_type: str
    ) -> torch.Tensor:
        """DISTIL's per-batch helper of :meth:`get_grad_embedding`, kept for subclasses that call it."""
        return last_layer_gradients(self.loss, model_output, l1, targets, grad_embedding_type)

    def feature_extraction(self, inp: Any, layer_name: str) -> torch.Tensor:
        """Output of the top-level submodule ``layer_name`` for one batch ``inp`` (a tensor, or a mapping passed as
        ``model(**inp)``), ``torch.squeeze``d; in eval mode, without gradients.

        The forward hook is removed and the model's train/eval flags restored on return (DISTIL keeps both).
        """
        settings = self._prepare("feature_extraction")
        with (
            eval_mode(self.model),
            captured_layer(self.model, layer_name, settings.where) as capture,
            torch.no_grad(),
        ):
            call_model(self.model, to_device(inp, settings.device))
            return capture.take()

    def get_feature_embedding(self, dataset: Dataset, unlabeled: bool, layer_name: str = "avgpool") -> torch.Tensor:
        """:meth:`feature_extraction` of every batch of ``args['batch_size']`` samples, stacked (``torch.vstack``).

        Args:
            dataset: the samples; tensors, mappings or ``(x, y)`` items.
            unlabeled: False for a labelled dataset: the ``"labels"`` key of mapping items is not passed to the
                model (``(x, y)`` items always pass ``x`` alone).
            layer_name: a top-level submodule of the model (``ValueError`` naming the choices otherwise).

        Returns:
            ``[N, ...]`` features on the device; an empty dataset gives a ``[0, 0]`` tensor.
        """
        settings = self._prepare("get_feature_embedding")
        dataset_length(settings.where, "dataset", dataset)
        features: list[torch.Tensor] = []
        with eval_mode(self.model), captured_layer(self.model, layer_name, settings.where) as capture:
            for _ in eval_outputs(self.model, settings, dataset, drop_labels=not unlabeled):
                features.append(capture.take())
        if not features:
            return torch.zeros(0, 0, device=settings.device)
        return torch.vstack(features)
