"""BatchBALDDropout: consistent MC passes, the candidate set, parity with batchbald_redux and DISTIL's procedure."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import entropy_al
from entropy_al import keyed_dropout
from entropy_al.active_learning_strategies.batch_bald import BatchBALDDropout
from entropy_al.keyed_mc import site_seed

redux = pytest.importorskip("batchbald_redux.batchbald")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEATURES, HIDDEN, CLASSES = 6, 12, 3


class InjectNet(nn.Module):
    """A DISTIL-shaped model: its last layer is ``linear``; its own dropout is off while a dropout is injected."""

    def __init__(self, seed: int = 0, classes: int = CLASSES, dropout: float = 0.3):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(FEATURES, HIDDEN)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(HIDDEN, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.features(x)))


def pool(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(seed)) * 2


def strategy(model, unlabeled, **args):
    return BatchBALDDropout(None, unlabeled, model, CLASSES, {"device": "cpu", **args})


def redux_indices(log_probs: torch.Tensor, budget: int, num_samples: int) -> list[int]:
    return redux.get_batchbald_batch(log_probs.to(torch.float64), budget, num_samples, dtype=torch.float64).indices


def keyed_injected_log_probs(model: InjectNet, x: torch.Tensor, n_drop: int, seed: int) -> torch.Tensor:
    """``[N, n_drop, C]``: pass k drops the features before ``linear`` with the keyed mask of (seed, k) alone,
    the model's own dropout off (eval)."""
    with torch.no_grad():
        hidden = model.features(x)
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        passes = [
            model.linear(keyed_dropout(hidden, 0.5, site_seed(seed, 0), zeros, torch.full_like(zeros, k)))
            for k in range(n_drop)
        ]
    return torch.log_softmax(torch.stack(passes, dim=1), dim=2)


@pytest.mark.parametrize("budget", [1, 3, 5])
def test_whole_pool_equals_batchbald_redux_index_for_index(budget):
    model, x = InjectNet(), pool(60)
    args = {"n_drop": 8, "mc_seed": 11, "candidates": None, "n_samples": 1000, "batch_size": 7}
    picked = strategy(model, x, **args).select(budget)
    want = redux_indices(keyed_injected_log_probs(model, x, 8, 11), budget, 1000)
    assert picked == want
    assert len(set(picked)) == budget


def distil_log_probs(model: InjectNet, x: torch.Tensor, n_drop: int, batch_size: int) -> torch.Tensor:
    """DISTIL's ``do_MC_dropout_before_linear``, from its documented behaviour: the model in eval mode, a dropout of
    p = 0.5 before ``linear`` whose boolean mask (True = dropped, ``bernoulli_(0.5)`` over one sample's features)
    is drawn at the first forward of each pass, a ``DataLoader(shuffle=False)`` iterated once per pass, softmax
    probabilities, then their log."""
    model.eval()
    loader = DataLoader(x, batch_size=batch_size, shuffle=False)
    probs = torch.zeros(n_drop, x.shape[0], CLASSES)
    with torch.no_grad():
        for k in range(n_drop):
            mask, done = None, 0
            for batch in loader:
                hidden = model.features(batch)
                if mask is None:
                    mask = torch.empty((1, HIDDEN), dtype=torch.bool).bernoulli_(0.5)
                out = model.linear(hidden.masked_fill(mask, 0) / 0.5)
                probs[k, done : done + batch.shape[0]] = torch.softmax(out, dim=1)
                done += batch.shape[0]
    return torch.log(probs.permute(1, 0, 2))


@pytest.mark.parametrize("seed", [0, 5])
def test_reproduce_distil_equals_redux_on_distils_passes(seed):
    model, x = InjectNet(), pool(45)
    torch.manual_seed(seed)
    want = redux_indices(distil_log_probs(model, x, 6, 10), 4, 1000)
    chosen = strategy(model, x, n_drop=6, batch_size=10, reproduce_distil=True, candidates=None)
    torch.manual_seed(seed)
    assert chosen.select(4) == want


@pytest.mark.parametrize("candidates", [None, 25])
def test_keyed_selection_invariant_to_batching(candidates):
    model, x = InjectNet(), pool(80)
    runs = [
        {"batch_size": 1, "stream_buffer_size": 7, "mc_memory_budget": 0},
        {"batch_size": 16, "stream_buffer_size": 1000},
        {"batch_size": 80, "stream_buffer_size": 33, "mc_memory_budget": 1 << 30},
    ]
    picks = [strategy(model, x, n_drop=6, mc_seed=2, candidates=candidates, **run).select(5) for run in runs]
    assert picks[0] == picks[1] == picks[2]


def test_own_dropout_mode_is_consistent_and_invariant():
    model, x = InjectNet(dropout=0.4), pool(50)
    runs = [{"batch_size": 3}, {"batch_size": 50, "mc_memory_budget": 1 << 30}]
    picks = [strategy(model, x, n_drop=5, mc_seed=9, mod_inject=None, **run).select(4) for run in runs]
    assert picks[0] == picks[1]
    # Not the injected mode's passes (the model's own p = 0.4 dropout before ``linear`` instead).
    with torch.no_grad():
        zeros = torch.zeros(50, dtype=torch.int64)
        hidden = model.features(x)
        logits = [
            model.linear(keyed_dropout(hidden, 0.4, site_seed(9, 0), zeros, torch.full_like(zeros, k)))
            for k in range(5)
        ]
    assert picks[0] == redux_indices(torch.log_softmax(torch.stack(logits, 1), 2), 4, 1000)


def test_seed_changes_masks_and_mc_seed_fixes_them():
    model, x = InjectNet(), pool(80)
    first = strategy(model, x, n_drop=6, mc_seed=1).select(6)
    assert strategy(model, x, n_drop=6, mc_seed=1).select(6) == first
    torch.manual_seed(0)
    a = strategy(model, x, n_drop=6).select(6)
    torch.manual_seed(0)
    assert strategy(model, x, n_drop=6).select(6) == a


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        dict(model.named_children()),
    )


def assert_restored(model, before):
    state, flags, children = before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == flags
    assert dict(model.named_children()) == children
    assert all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("args", [{}, {"mod_inject": None}, {"reproduce_distil": True}])
def test_model_restored_after_select(args):
    model, x = InjectNet(), pool(30)
    model.train()
    before = snapshot(model)
    strategy(model, x, n_drop=4, **args).select(3)
    assert_restored(model, before)


class NanAt(InjectNet):
    def __init__(self, rows):
        super().__init__()
        self.rows = rows

    def forward(self, x):
        out = super().forward(x)
        bad = torch.isin(x[:, 0], self.rows)
        return torch.where(bad[:, None], torch.tensor(float("nan")), out)


def test_nan_logits_raise_or_are_omitted():
    x = pool(40)
    model = NanAt(x[[3, 17], 0])
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"2 .*pool index 3|pool index 3"):
        strategy(model, x, n_drop=4).select(5)
    assert_restored(model, before)
    with pytest.warns(RuntimeWarning, match="never selected"):
        picked = strategy(model, x, n_drop=4, nan_policy="omit", candidates=None).select(38)
    assert len(set(picked)) == 38 and 3 not in picked and 17 not in picked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        everything = strategy(model, x, n_drop=4, nan_policy="omit", candidates=None).select(40)
    assert everything[-2:] == [3, 17]


@pytest.mark.parametrize(
    "args, error, text",
    [
        ({"mod_inject": "head"}, ValueError, "mod_inject"),
        ({"mod_inject": 3}, TypeError, "mod_inject"),
        ({"mc_dropout": "torch"}, ValueError, "mc_dropout"),
        ({"n_samples": 2, "n_drop": 5}, ValueError, "n_samples"),
        ({"candidates": 2}, ValueError, "candidates"),
        ({"candidates": "all"}, TypeError, "candidates"),
        ({"n_drop": 0}, ValueError, "n_drop"),
        ({"reproduce_distil": True, "mod_inject": None}, ValueError, "mod_inject"),
        ({"mc_head": "fc"}, ValueError, "mc_head"),
    ],
)
def test_bad_args_are_named(args, error, text):
    with pytest.raises(error, match=text):
        strategy(InjectNet(), pool(10), **args).select(3)


def test_own_dropout_mode_needs_dropout():
    model = nn.Sequential(nn.Linear(FEATURES, CLASSES))
    with pytest.raises(ValueError, match="no dropout module"):
        strategy(model, pool(10), mod_inject=None).select(2)


@pytest.mark.parametrize("budget, error", [(-1, ValueError), (1.5, TypeError), ("3", TypeError)])
def test_bad_budget(budget, error):
    with pytest.raises(error, match="budget"):
        strategy(InjectNet(), pool(10)).select(budget)


def test_budget_edges_and_nclasses():
    model, x = InjectNet(), pool(10)
    assert strategy(model, x).select(0) == []
    assert sorted(strategy(model, x, n_drop=3).select(15)) == list(range(10))
    with pytest.raises(ValueError, match="nclasses"):
        BatchBALDDropout(None, x, model, CLASSES + 1, {"device": "cpu"}).select(2)


def test_exports_and_distil_defaults():
    assert entropy_al.BatchBALDDropout is BatchBALDDropout
    assert entropy_al.active_learning_strategies.BatchBALDDropout is BatchBALDDropout
    chosen = BatchBALDDropout(None, pool(3), InjectNet(), CLASSES)
    assert (chosen.n_drop, chosen.n_samples, chosen.mod_inject) == (40, 1000, "linear")


# select()'s peak resident memory above the pool's, in a fresh process: Linux's VmHWM, reset before the call.
_PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_batch_bald import InjectNet, strategy
torch.set_num_threads(1)
n = int(sys.argv[1])
x = torch.randn(n, 6)
chosen = strategy(InjectNet(), x, n_drop=20, mc_seed=0, candidates=1000, batch_size=4096, stream_buffer_size=4096)
chosen.select(2)  # warm-up: the allocator's and the libraries' first-use memory
def kib(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
open("/proc/self/clear_refs", "w").write("5")
base = kib("VmRSS:")
chosen.select(10)
print(kib("VmHWM:") - base)
"""


def select_peak_kib(n: int) -> int:
    script = _PEAK_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script, str(n)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable VmHWM")
@pytest.mark.parametrize("big", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_peak_memory_flat_in_pool_size(big):
    """[N, n_drop, C] float32 would be 24 MB at 10^5 and 240 MB at 10^6; the candidate store is 1000 rows."""
    small, large = select_peak_kib(10_000), select_peak_kib(big)
    whole_pool_kib = big * 20 * CLASSES * 4 // 1024
    assert large - small < max(whole_pool_kib // 4, 4096), (small, large)
