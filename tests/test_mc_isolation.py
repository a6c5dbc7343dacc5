"""MC passes never leak into each other, and model quirks never turn into a silently wrong selection.

Each case pairs a model with a quirk (it writes into its input, returns one preallocated output buffer, changes
its own dtype, ...) with the same model without it. Both run under the same seed, so they draw the same dropout
masks; any difference in the passes is a leak.
"""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from entropy_al import EntropySamplingDropout, StreamingTopK
from entropy_al.active_learning_strategies import ScoreStreamingStrategy

NUM_CLASSES = 4
WIDTH = 16
N_DROP = 5

# How the passes of a batch are run: one per forward, all stacked into one forward, DISTIL's loop order.
RUN_MODES = {
    "one-pass-per-forward": {"mc_memory_budget": 0},
    "stacked": {"mc_memory_budget": 1 << 30},
    "distil-loop": {"reproduce_distil": True},
}


def make_pool(num_samples: int = 23, seed: int = 0) -> torch.Tensor:
    """Inputs with no zero anywhere (shifted away from 0), so a zeroed element can only come from a leak."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_samples, WIDTH, generator=generator).abs() + 0.5


def make_strategy(model: nn.Module, pool: torch.Tensor, **args) -> EntropySamplingDropout:
    settings = {"batch_size": 5, "device": "cpu", "n_drop": N_DROP, "stream_buffer_size": 7, **args}
    return EntropySamplingDropout(pool, pool, model, NUM_CLASSES, settings)


def seeded_passes(model: nn.Module, pool: torch.Tensor, **args) -> torch.Tensor:
    torch.manual_seed(1234)
    return make_strategy(model, pool, **args).predict_prob_dropout_split(pool, N_DROP)


def seeded_selection(model: nn.Module, pool: torch.Tensor, budget: int = 9, **args) -> list[int]:
    torch.manual_seed(1234)
    return make_strategy(model, pool, **args).select(budget)


class Recorder(nn.Module):
    """Identity that remembers a copy of every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x


class SubtractInPlace(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sub_(0.25) if self.inplace else x - 0.25


def twin_models(first: str, inplace: bool) -> nn.Sequential:
    """``Linear → first op → Dropout → Linear`` with fixed weights; ``first`` writes into its input if ``inplace``."""
    torch.manual_seed(0)
    trunk = nn.Linear(WIDTH, WIDTH)
    head_first = nn.Dropout(0.5, inplace=inplace) if first == "dropout" else SubtractInPlace(inplace)
    layers = [trunk, Recorder(), head_first]
    if first != "dropout":
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(WIDTH, NUM_CLASSES))
    return nn.Sequential(*layers)


def input_writer(first: str, inplace: bool) -> nn.Sequential:
    """The whole model starts with the in-place op: it writes into the fetched batch itself."""
    model = twin_models(first, inplace)
    return nn.Sequential(*list(model)[1:])  # Recorder, op, (Dropout), Linear


def rows_are_pool_rows(seen: torch.Tensor, pool: torch.Tensor) -> bool:
    return bool((seen[:, None, :] == pool[None, :, :]).all(-1).any(1).all())


@pytest.mark.parametrize("first", ["dropout", "subtract"])
@pytest.mark.parametrize("mode", sorted(RUN_MODES))
def test_every_pass_sees_the_batch_as_fetched(first, mode):
    pool = make_pool()
    before = pool.clone()
    quirky = input_writer(first, inplace=True)
    got = seeded_passes(quirky, pool, **RUN_MODES[mode])
    recorder = quirky[0]
    assert recorder.seen, "the model never ran"
    assert all(rows_are_pool_rows(seen, pool) for seen in recorder.seen), "a pass saw a batch written by another"
    assert torch.equal(pool, before), "the caller's pool was modified"
    clean = seeded_passes(input_writer(first, inplace=False), pool, **RUN_MODES[mode])
    torch.testing.assert_close(got, clean, rtol=0, atol=0)


@pytest.mark.parametrize("first", ["dropout", "subtract"])
def test_head_only_passes_see_the_trunk_output_as_computed(first):
    pool = make_pool()
    spec = {"mc_head": "0", "mc_memory_budget": 0}
    got = seeded_passes(twin_models(first, inplace=True), pool, **spec)
    clean = seeded_passes(twin_models(first, inplace=False), pool, **spec)
    torch.testing.assert_close(got, clean, rtol=0, atol=0)
    stacked = {"mc_head": "0", "mc_memory_budget": 1 << 30}
    got = seeded_passes(twin_models(first, inplace=True), pool, **stacked)
    clean = seeded_passes(twin_models(first, inplace=False), pool, **stacked)
    torch.testing.assert_close(got, clean, rtol=0, atol=0)


@pytest.mark.parametrize("mode", sorted(RUN_MODES))
def test_in_place_input_writes_do_not_change_the_selection(mode):
    pool = make_pool(40)
    quirky = seeded_selection(input_writer("dropout", inplace=True), pool, **RUN_MODES[mode])
    clean = seeded_selection(input_writer("dropout", inplace=False), pool, **RUN_MODES[mode])
    assert quirky == clean


class BufferedOutput(nn.Module):
    """Returns the same preallocated tensor from every call, as buffer-reusing or graph-captured models do."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.out is None or self.out.shape != y.shape:
            self.out = torch.empty_like(y)
        self.out.copy_(y)
        return self.out


def dropout_body() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Dropout(0.5), nn.Linear(WIDTH, NUM_CLASSES))


@pytest.mark.parametrize("mode", sorted(RUN_MODES))
def test_a_reused_output_buffer_keeps_every_pass(mode):
    pool = make_pool()
    got = seeded_passes(BufferedOutput(dropout_body()), pool, **RUN_MODES[mode])
    clean = seeded_passes(dropout_body(), pool, **RUN_MODES[mode])
    assert not torch.equal(clean[0], clean[1]), "the reference passes should differ"
    torch.testing.assert_close(got, clean, rtol=0, atol=0)
    quirky_selection = seeded_selection(BufferedOutput(dropout_body()), pool, **RUN_MODES[mode])
    assert quirky_selection == seeded_selection(dropout_body(), pool, **RUN_MODES[mode])


class FixedScores(ScoreStreamingStrategy):
    """A DISTIL-style strategy: scores from an overridden acquire_scores. Pool item i is the one-element tensor [i]."""

    def __init__(self, scores: torch.Tensor, **args):
        pool = torch.arange(len(scores), dtype=torch.float32)[:, None]
        super().__init__(pool, pool, nn.Identity(), 1, {"device": "cpu", **args})
        self.scores = scores

    def acquire_scores(self, unlabeled_buffer):
        items = torch.stack([unlabeled_buffer[i] for i in range(len(unlabeled_buffer))])
        return self.scores[items.flatten().long()]


SIXTY_FOUR_BIT = {
    "float64": torch.tensor([1.0, 1.0 + 1e-12, 1.0 + 2e-12, 1.0 + 1e-12, -3.0], dtype=torch.float64),
    "int64": torch.tensor([2**24, 2**24 + 1, 2**24 + 3, 2**24 + 2, 2**24 + 1, 2**53 + 1, 2**53], dtype=torch.int64),
}


def stable_descending(scores: torch.Tensor) -> list[int]:
    return torch.sort(scores, descending=True, stable=True).indices.tolist()


@pytest.mark.parametrize("dtype", sorted(SIXTY_FOUR_BIT))
@pytest.mark.parametrize("block", [1, 2, 100])
def test_streaming_topk_keeps_64_bit_scores_exact(dtype, block):
    scores = SIXTY_FOUR_BIT[dtype]
    for k in (1, 3, len(scores)):
        topk = StreamingTopK(k)
        for offset in range(0, len(scores), block):
            topk.update(scores[offset : offset + block], offset)
        assert topk.indices.tolist() == stable_descending(scores)[:k]


@pytest.mark.parametrize("dtype", sorted(SIXTY_FOUR_BIT))
@pytest.mark.parametrize("buffer", [1, 3, 100])
def test_select_keeps_64_bit_acquired_scores_exact(dtype, buffer):
    scores = SIXTY_FOUR_BIT[dtype]
    strategy = FixedScores(scores, stream_buffer_size=buffer)
    assert strategy.select(len(scores)) == stable_descending(scores)
    assert strategy.select(2) == stable_descending(scores)[:2]


class SelfUpcasting(nn.Module):
    """Moves its own parameters to float64 inside forward (``self.to(x.dtype)``-style models)."""

    def __init__(self):
        super().__init__()
        self.body = dropout_body()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.to(torch.float64)
        return self.body(x.double())


def test_a_forward_that_changes_parameter_dtype_is_restored_exactly():
    model = SelfUpcasting()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    parameters = list(model.parameters())
    selection = make_strategy(model, make_pool()).select(5)
    assert len(selection) == 5
    after = model.state_dict()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype, name
        assert after[name].device == tensor.device, name
        assert torch.equal(after[name], tensor), name
    assert all(a is b for a, b in zip(parameters, model.parameters(), strict=True)), "parameter objects replaced"


class Gate(nn.Module):
    """Holds each named thread's first forward until the test releases that thread, to force an overlap."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.entered = {name: threading.Event() for name in names}
        self.release = {name: threading.Event() for name in names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = threading.current_thread().name
        if name in self.entered and not self.entered[name].is_set():
            self.entered[name].set()
            self.release[name].wait(timeout=30)
        return x


@pytest.mark.parametrize("dropout", ["torch", "keyed"])
def test_two_threads_selecting_on_one_model_are_safe_or_refused(dropout):
    torch.manual_seed(0)
    gate = Gate(("first", "second"))
    model = nn.Sequential(gate, nn.Linear(WIDTH, WIDTH), nn.BatchNorm1d(WIDTH), nn.Dropout(0.5), nn.Linear(WIDTH, 4))
    model.train()
    model[2].eval()  # a mixed train/eval state that must come back exactly
    flags = [module.training for module in model.modules()]
    pool = make_pool(30)
    args = {"mc_dropout": dropout, "mc_seed": 7}
    solo_model = nn.Sequential(nn.Identity(), *list(model)[1:])
    expected = make_strategy(solo_model, pool, **args).select(6)
    assert [module.training for module in model.modules()] == flags

    outcomes: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            outcomes[name] = make_strategy(model, pool, **args).select(6)
        except RuntimeError as exc:  # a clear refusal is an acceptable outcome for the second caller
            outcomes[name] = exc

    # The first caller is held inside its passes while the second enters; the second then finishes last, so a
    # second caller that saved the first one's MC flags as "the model's state" would restore those.
    first = threading.Thread(target=run, args=("first",), name="first")
    first.start()
    assert gate.entered["first"].wait(timeout=30)
    second = threading.Thread(target=run, args=("second",), name="second")
    second.start()
    gate.entered["second"].wait(timeout=2.0)  # set only if the second caller runs its passes concurrently
    gate.release["first"].set()
    first.join(timeout=60)
    gate.release["second"].set()
    second.join(timeout=60)
    same = (lambda got: got == expected) if dropout == "keyed" else (lambda got: len(set(got)) == len(expected))
    assert isinstance(outcomes["first"], list) and same(outcomes["first"])
    if isinstance(outcomes["second"], RuntimeError):
        assert "select" in str(outcomes["second"]) and "model" in str(outcomes["second"])
    else:
        assert isinstance(outcomes["second"], list) and same(outcomes["second"])
    assert [module.training for module in model.modules()] == flags


class LogitsOutput:
    """A Hugging Face-style model output: an object carrying ``.logits``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.hidden_states = None


class Wrapped(nn.Module):
    def __init__(self, body: nn.Module, kind: str):
        super().__init__()
        self.body = body
        self.kind = kind

    def forward(self, x: torch.Tensor):
        logits = self.body(x)
        if self.kind == "object":
            return LogitsOutput(logits)
        if self.kind == "mapping":
            return {"logits": logits, "hidden": x}
        return (logits, x)


@pytest.mark.parametrize("kind", ["object", "mapping"])
def test_model_outputs_carrying_logits_are_used(kind):
    pool = make_pool()
    args = {"mc_dropout": "keyed", "mc_seed": 3}
    assert seeded_selection(Wrapped(dropout_body(), kind), pool, **args) == seeded_selection(
        dropout_body(), pool, **args
    )
    strategy = make_strategy(Wrapped(dropout_body(), kind), pool)
    torch.testing.assert_close(strategy.predict_prob(pool), make_strategy(dropout_body(), pool).predict_prob(pool))


def test_other_model_outputs_say_how_to_wrap_the_model():
    strategy = make_strategy(Wrapped(dropout_body(), "tuple"), make_pool())
    with pytest.raises(TypeError, match="wrap"):
        strategy.select(3)


class AlwaysOnDropout(_DropoutNd):
    """An MC-dropout module that is stochastic in eval mode too (as baal's modules are)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(WIDTH, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.dropout(x, 0.5, training=True))


def no_dropout_warnings(caught) -> list[warnings.WarningMessage]:
    return [w for w in caught if "no dropout" in str(w.message)]


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.Linear(WIDTH, WIDTH), AlwaysOnDropout(0.5), nn.Linear(WIDTH, NUM_CLASSES)), FunctionalDropout()],
    ids=["always-on-module", "functional"],
)
def test_no_warning_when_the_passes_differ(model):
    pool = make_pool()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        passes = make_strategy(model, pool).predict_prob_dropout_split(pool, N_DROP)
        make_strategy(model, pool).select(3)
    assert not torch.equal(passes[0], passes[1])
    assert not no_dropout_warnings(caught)


def test_identical_passes_warn_at_the_callers_line():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, NUM_CLASSES))
    pool = make_pool()
    for call in (lambda s: s.select(3), lambda s: s.predict_prob_dropout_split(pool, N_DROP)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(make_strategy(model, pool))
        found = no_dropout_warnings(caught)
        assert len(found) == 1
        assert found[0].filename == __file__
