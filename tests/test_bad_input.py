"""Bad input at every public entry point: a clear error naming the argument; no crash, hang or partial result.

Table-driven: each row is a call, the exception type and a regex the message must match (it names the argument).
This file: the strategies' constructors and methods; test_bad_input_scores.py, test_bad_input_topk.py and
test_bad_input_keyed.py: the ops; test_bad_input_pools.py: budgets, datasets, subclasses' scores, batch samplers.
It fills the gaps left by the error tests next to each feature: test_registration.py (``mc_scores``' logits and
score, ``topk_update``'s state), test_topk.py (``StreamingTopK``'s k, offset and scores), test_keyed_dropout.py
(``keyed_dropout``'s dtypes, p range, ids; ``keyed_mc_dropout``'s layouts) and test_strategies.py (the ``args`` keys
of one strategy, budgets, nclasses, model output in ``select``).

After a strategy method fails, the model's train/eval flags, parameters and buffers are as before (no partial
state), nothing was selected, and the same strategy still works once the input is fixed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategy_fixtures import (
    NUM_CLASSES,
    FeatureNet,
    ReturnsNet,
    assert_fails_cleanly,
    make_pool,
    mc_strategy,
    module_flags,
)

import entropy_al
from entropy_al import active_learning_strategies as als

# ------------------------------------------------------------------------------------------------------------------
# Strategy constructors

CLASSES = [
    als.Strategy,
    als.ScoreStreamingStrategy,
    entropy_al.EntropySamplingDropout,
    entropy_al.BALDDropout,
    entropy_al.MarginSamplingDropout,
    entropy_al.LeastConfidenceSamplingDropout,
]

CONSTRUCTOR_CASES = [
    # (nclasses, args, error, match)
    (0, {}, ValueError, "`nclasses` to be a positive int, got 0"),
    (-2, {}, ValueError, "`nclasses` to be a positive int, got -2"),
    (4.0, {}, TypeError, "`nclasses` to be an int, got float 4.0"),
    ("4", {}, TypeError, "`nclasses` to be an int, got str"),
    (True, {}, TypeError, "`nclasses` to be an int, got bool"),
    (None, {}, TypeError, "`nclasses` to be an int, got NoneType"),
    (4, [("n_drop", 2)], TypeError, "`args` to be a dict, got list"),
    (4, "n_drop=2", TypeError, "`args` to be a dict, got str"),
    (4, {"n_drop": 0}, ValueError, r"args\['n_drop'\] to be a positive int, got 0"),
    (4, {"n_drop": -3}, ValueError, r"args\['n_drop'\] to be a positive int, got -3"),
    (4, {"n_drop": 2.5}, TypeError, r"args\['n_drop'\] to be an int, got float 2.5"),
    (4, {"n_drop": 10.0}, TypeError, r"args\['n_drop'\] to be an int, got float 10.0"),
    (4, {"n_drop": None}, TypeError, r"args\['n_drop'\] to be an int, got NoneType"),
    (4, {"n_drop": np.float32(3)}, TypeError, r"args\['n_drop'\] to be an int, got float32"),
    (4, {"batch_size": 0}, ValueError, r"args\['batch_size'\] to be a positive int, got 0"),
    (4, {"batch_size": 1.5}, TypeError, r"args\['batch_size'\] to be an int"),
    (4, {"stream_buffer_size": 0}, ValueError, r"args\['stream_buffer_size'\] to be a positive int, got 0"),
    (4, {"stream_buffer_size": -5}, ValueError, r"args\['stream_buffer_size'\] to be a positive int, got -5"),
    (4, {"stream_buffer_size": 1e4}, TypeError, r"args\['stream_buffer_size'\] to be an int, got float"),
    (4, {"device": "gpu"}, ValueError, r"args\['device'\] to be a torch device"),
    (4, {"device": 1.5}, ValueError, r"args\['device'\] to be a torch device"),
    (4, {"loss": "cross_entropy"}, TypeError, r"args\['loss'\] to be callable"),
    (4, {"mc_mode": None}, ValueError, r"args\['mc_mode'\] to be one of 'dropout', 'train', got None"),
    (4, {"nan_policy": "skip"}, ValueError, r"args\['nan_policy'\] to be one of 'raise', 'omit'"),
    (4, {"reproduce_distil": "yes"}, TypeError, r"args\['reproduce_distil'\] to be a bool"),
    (4, {"progress": 1}, TypeError, r"args\['progress'\] to be a bool"),
    (4, {"distributed": "auto"}, TypeError, r"args\['distributed'\] to be True, False or None"),
    (4, {"mc_memory_budget": -1}, ValueError, r"args\['mc_memory_budget'\] to be an int >= 0"),
    (4, {"num_workers": 1.0}, TypeError, r"args\['num_workers'\] to be an int"),
    (4, {"amp_dtype": torch.float64}, ValueError, r"args\['amp_dtype'\] to be None, torch.bfloat16 or torch.float16"),
    (4, {"mc_head": 3}, TypeError, r"args\['mc_head'\] to be a \(trunk, head\) pair"),
    (4, {"batch_sampler": 8}, TypeError, r"args\['batch_sampler'\] to be an iterable of index lists"),
]


@pytest.mark.parametrize("nclasses, args, error, match", CONSTRUCTOR_CASES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_constructors_reject_bad_arguments_naming_them(cls, nclasses, args, error, match):
    with pytest.raises(error, match=f"^{cls.__name__}: expected {match}"):
        cls(None, make_pool(3), FeatureNet(), nclasses, args)


# ------------------------------------------------------------------------------------------------------------------
# Strategy methods

POOL = make_pool(8)

MODEL_OUTPUTS = {
    "tuple": (lambda z, x: (z, x), TypeError, "expected the model to return a floating tensor of logits, got tuple"),
    "dict": (lambda z, x: {"scores": z}, TypeError, "floating tensor of logits, got dict"),
    "list": (lambda z, x: [z], TypeError, "floating tensor of logits, got list"),
    "int-tensor": (lambda z, x: z.long(), TypeError, "floating tensor of logits, got a torch.int64 tensor"),
    "bool-tensor": (lambda z, x: z > 0, TypeError, "floating tensor of logits, got a torch.bool tensor"),
    "complex-tensor": (lambda z, x: z.to(torch.complex64), TypeError, "got a torch.complex64 tensor"),
    "1d": (lambda z, x: z.sum(1), ValueError, r"logits of shape \[batch, nclasses\] = \[\d+, 4\], got shape \(\d+,\)"),
    "3d": (lambda z, x: z[:, None], ValueError, r"logits of shape \[batch, nclasses\].*got shape \(\d+, 1, 4\)"),
    "wrong-width": (lambda z, x: torch.cat([z, z], 1), ValueError, r"outputs 8 classes .* but nclasses = 4"),
    "wrong-rows": (lambda z, x: z[:1], ValueError, r"returned 1 rows of logits for a batch of 3 samples"),
    "none": (lambda z, x: None, TypeError, "floating tensor of logits, got NoneType"),
}
LOGIT_METHODS = {
    "select": lambda s: s.select(3),
    "acquire_scores": lambda s: s.acquire_scores(POOL),
    "predict": lambda s: s.predict(POOL),
    "predict_prob": lambda s: s.predict_prob(POOL),
    "predict_prob_dropout": lambda s: s.predict_prob_dropout(POOL, 2),
    "predict_prob_dropout_split": lambda s: s.predict_prob_dropout_split(POOL, 2),
}


@pytest.mark.parametrize("reproduce", [False, True], ids=["fast", "reproduce_distil"])
@pytest.mark.parametrize("method", list(LOGIT_METHODS))
@pytest.mark.parametrize("output", list(MODEL_OUTPUTS))
def test_bad_model_output_is_named_by_every_method(output, method, reproduce):
    if reproduce and method in ("predict", "predict_prob"):
        pytest.skip("eval-mode methods have no DISTIL loop")
    make, error, match = MODEL_OUTPUTS[output]
    model = ReturnsNet(make).train()
    strategy = mc_strategy(model, reproduce_distil=reproduce)
    assert_fails_cleanly(strategy, LOGIT_METHODS[method], error, match)
    model.make = lambda z, x: z  # fixed: the same strategy works
    assert len(LOGIT_METHODS[method](strategy)) in (3, 8, 2)


EMBEDDING_METHODS = {
    "get_embedding": lambda s: s.get_embedding(POOL),
    "get_grad_embedding": lambda s: s.get_grad_embedding(POOL, True),
}
EMBEDDING_OUTPUTS = {
    "bare-logits": (lambda z, x: z, TypeError, r"expected model\(x, last=True\) to return \(logits, embedding\)"),
    "dict": (
        lambda z, x: {"logits": z, "embedding": x},
        TypeError,
        r"to return \(logits, embedding\), got <class 'dict'>",
    ),
    "triple": (lambda z, x: (z, x, x), TypeError, r"to return \(logits, embedding\)"),
    "embedding-not-a-tensor": (lambda z, x: (z, x.tolist()), TypeError, r"to return \(logits, embedding\)"),
    "embedding-wrong-rows": (
        lambda z, x: (z, x[:1]),
        ValueError,
        r"embedding of shape \(1, 6\) for a batch of 3 samples",
    ),
    "embedding-0d": (lambda z, x: (z, x.sum()), ValueError, r"embedding of shape \(\) for a batch of 3 samples"),
}


@pytest.mark.parametrize("method", list(EMBEDDING_METHODS))
@pytest.mark.parametrize("output", list(EMBEDDING_OUTPUTS))
def test_bad_embedding_output_is_named(output, method):
    make, error, match = EMBEDDING_OUTPUTS[output]
    assert_fails_cleanly(mc_strategy(ReturnsNet(make)), EMBEDDING_METHODS[method], error, match)


@pytest.mark.parametrize(
    "output, error, match",
    [
        (lambda z, x: (torch.cat([z, z], 1), x), ValueError, "outputs 8 classes .* but nclasses = 4"),
        (lambda z, x: (z.long(), x), TypeError, "floating tensor of logits, got a torch.int64 tensor"),
        (lambda z, x: ({"scores": z}, x), TypeError, "floating tensor of logits, got dict"),
    ],
)
def test_bad_logits_of_grad_embedding_are_named(output, error, match):
    assert_fails_cleanly(mc_strategy(ReturnsNet(output)), EMBEDDING_METHODS["get_grad_embedding"], error, match)


N_DROP_CASES = [
    (0, ValueError, "`n_drop` to be a positive int, got 0"),
    (-1, ValueError, "`n_drop` to be a positive int, got -1"),
    (2.0, TypeError, "`n_drop` to be an int, got float 2.0"),
    (0.5, TypeError, "`n_drop` to be an int, got float 0.5"),
    (True, TypeError, "`n_drop` to be an int, got bool"),
    (None, TypeError, "`n_drop` to be an int, got NoneType"),
    ("3", TypeError, "`n_drop` to be an int, got str"),
    (torch.tensor(True), TypeError, r"`n_drop` to be an int, got bool tensor\(True\)"),
]


@pytest.mark.parametrize("n_drop, error, match", N_DROP_CASES)
def test_bad_n_drop_is_named_at_every_use(n_drop, error, match):
    model = FeatureNet()
    strategy = mc_strategy(model)
    for method in ("predict_prob_dropout", "predict_prob_dropout_split"):
        assert_fails_cleanly(strategy, lambda s, method=method: getattr(s, method)(POOL, n_drop), error, match)
    strategy.n_drop = n_drop  # DISTIL's API lets the user edit the attribute
    assert_fails_cleanly(strategy, lambda s: s.select(2), error, match)
    assert_fails_cleanly(strategy, lambda s: s.acquire_scores(POOL), error, match)
    strategy.n_drop = 2
    assert len(strategy.select(2)) == 2


@pytest.mark.parametrize(
    "attribute, value, error, match",
    [
        ("stream_buffer_size", 0, ValueError, "`stream_buffer_size` to be a positive int, got 0"),
        ("stream_buffer_size", 2.5, TypeError, "`stream_buffer_size` to be an int, got float"),
        ("stream_buffer_size", None, TypeError, "`stream_buffer_size` to be an int, got NoneType"),
        ("device", "gpu", ValueError, "the strategy's device to be a torch device"),
        (
            "device",
            "cuda:99",
            ValueError,
            r"device \(args\['device'\]\) is cuda:99, but this process sees \d+ CUDA device",
        ),
        ("device", "meta", ValueError, r"device \(args\['device'\]\) is meta, which holds no data"),
        (
            "model",
            None,
            TypeError,
            r"the model \(`net`, or update_model's `clf`\) to be a torch.nn.Module, got NoneType",
        ),
        ("model", lambda x: x, TypeError, r"\(`net`, or update_model's `clf`\) to be a torch.nn.Module, got function"),
        ("target_classes", 3, ValueError, "outputs 4 classes .* but nclasses = 3"),
    ],
)
def test_bad_attributes_are_named_at_use(attribute, value, error, match):
    """DISTIL's API exposes these attributes; a bad value fails at the next call, before any forward."""
    model = FeatureNet()
    strategy = mc_strategy(model)
    setattr(strategy, attribute, value)
    if attribute != "stream_buffer_size":
        for method in ("predict", "predict_prob_dropout", "get_grad_embedding"):
            if method == "get_grad_embedding" and attribute == "target_classes":
                continue
            call = {
                "predict": lambda s: s.predict(POOL),
                "predict_prob_dropout": lambda s: s.predict_prob_dropout(POOL, 2),
                "get_grad_embedding": lambda s: s.get_grad_embedding(POOL, True),
            }[method]
            assert_fails_cleanly(strategy, call, error, match)
    assert_fails_cleanly(strategy, lambda s: s.select(2), error, match)
    assert module_flags(model) == [True] * len(module_flags(model))


def test_cuda_device_without_cuda_or_out_of_range_is_named_in_args():
    args = {"device": "cuda:99", "n_drop": 2}
    strategy = entropy_al.BALDDropout(None, POOL, FeatureNet(), NUM_CLASSES, args)  # checked at use, like DISTIL
    assert_fails_cleanly(strategy, lambda s: s.select(2), ValueError, r"args\['device'\]\) is cuda:99")
    assert strategy.model.body[0].weight.device.type == "cpu"  # never moved
