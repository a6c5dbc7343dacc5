"""BatchBALD core: the greedy selection against batchbald_redux, and the streaming candidate keeper."""

import math

import pytest
import torch
from conftest import DEVICES

from entropy_al.selection.batchbald import batchbald_select
from entropy_al.selection.candidates import CandidateKeeper

redux = pytest.importorskip("batchbald_redux.batchbald")


def random_log_probs(M, K, C, seed, dtype=torch.float64, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(M, K, C, generator=g, dtype=torch.float64) * spread, dim=2).to(dtype)


def redux_batch(log_probs, batch_size, num_samples, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    batch = redux.get_batchbald_batch(log_probs.to(torch.float64), batch_size, num_samples, dtype=torch.float64)
    return batch.indices, torch.tensor(batch.scores, dtype=torch.float64)


EXACT_CASES = [  # M, K, C, batch
    (1, 2, 2, 1),
    (7, 3, 2, 7),  # batch = M
    (5, 4, 3, 9),  # batch > M
    (40, 5, 3, 1),
    (40, 10, 2, 6),
    (60, 7, 4, 5),
    (33, 20, 10, 3),
    (100, 2, 5, 4),
    (25, 6, 1, 4),  # C = 1: every gain is 0, the lower index wins
]


@pytest.mark.parametrize("M,K,C,batch", EXACT_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_regime_equals_batchbald_redux(M, K, C, batch, seed):
    log_probs = random_log_probs(M, K, C, seed)
    num_samples = max(K, C ** max(0, min(batch, M) - 1))  # exact up to the last step
    want, want_scores = redux_batch(log_probs, batch, num_samples)
    got, scores = batchbald_select(log_probs, batch, num_samples)
    if C == 1:
        want = list(range(min(batch, M)))  # all gains are 0: batchbald_redux's pick is then rounding noise
    assert got == want
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-9)


def test_float32_input_is_computed_in_float64():
    log_probs = random_log_probs(50, 8, 3, seed=5, dtype=torch.float32)
    want, _ = redux_batch(log_probs, 5, 3**4)
    assert batchbald_select(log_probs, 5, 3**4)[0] == want


def test_duplicates_tie_to_the_lower_index():
    base = random_log_probs(12, 6, 3, seed=7)
    log_probs = torch.cat([base, base])[torch.randperm(24, generator=torch.Generator().manual_seed(0))]
    want, _ = redux_batch(log_probs, 6, 3**5)
    got, _ = batchbald_select(log_probs, 6, 3**5)
    assert got == want
    first_of_row = {tuple(row.flatten().tolist()): i for i, row in reversed(list(enumerate(log_probs)))}
    assert got[0] == first_of_row[tuple(log_probs[got[0]].flatten().tolist())]


def test_chunking_does_not_change_the_selection():
    log_probs = random_log_probs(90, 10, 4, seed=3)
    generator = torch.Generator()
    picks = [batchbald_select(log_probs, 8, 500, generator.manual_seed(1), chunk_elements=c) for c in (1, 777, 1 << 22)]
    assert picks[0][0] == picks[1][0] == picks[2][0]
    torch.testing.assert_close(picks[0][1], picks[2][1], rtol=0, atol=1e-10)


def test_sampled_regime_draws_as_batchbald_redux_from_the_same_seed():
    log_probs = random_log_probs(40, 10, 5, seed=11)
    want, want_scores = redux_batch(log_probs, 6, 200, seed=123)
    got, scores = batchbald_select(log_probs, 6, 200, torch.Generator().manual_seed(123))
    assert got == want
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-9)


def joint_entropy_estimates(log_probs, batch, num_samples, seeds, max_exact_configs):
    """I(y_batch, y_m; ω) of every candidate m: one estimate per seed, [len(seeds), M]."""
    M = log_probs.shape[0]
    out = []
    for seed in seeds:
        rows = []
        for candidate in range(M):
            if candidate in batch:
                rows.append(float("nan"))
                continue
            subset = log_probs[batch + [candidate]]
            _, scores = batchbald_select(
                subset,
                len(batch) + 1,
                num_samples,
                torch.Generator().manual_seed(seed),
                max_exact_configs=max_exact_configs,
            )
            rows.append(scores[-1].item())
        out.append(rows)
    return torch.tensor(out, dtype=torch.float64)


def test_sampled_estimates_agree_with_exact_values():
    log_probs = random_log_probs(10, 8, 3, seed=21, spread=1.0)
    batch = [0, 1, 2, 3, 4]
    exact = joint_entropy_estimates(log_probs, batch, 8, [0], max_exact_configs=3**6)[0]
    sampled = joint_entropy_estimates(log_probs, batch, 2000, list(range(6)), max_exact_configs=1)
    mask = ~torch.isnan(exact)
    # The total mutual information of the batch, estimated: within a few percent, and unbiased on average.
    error = (sampled[:, mask] - exact[mask]).abs() / exact[mask]
    assert error.max() < 0.08
    assert ((sampled[:, mask].mean(0) - exact[mask]).abs() / exact[mask]).max() < 0.03


def test_sampled_selection_is_sensible_and_deterministic():
    # Two clusters of near-duplicates: BatchBALD must not fill the batch from one cluster as BALD would.
    base = random_log_probs(2, 10, 4, seed=2, spread=3.0)
    noise = random_log_probs(40, 10, 4, seed=3, spread=0.05)
    log_probs = torch.log_softmax(torch.cat([base[0] + noise[:20], base[1] + noise[20:]]), dim=2)
    first = batchbald_select(log_probs, 6, 100, torch.Generator().manual_seed(9))
    again = batchbald_select(log_probs, 6, 100, torch.Generator().manual_seed(9))
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    clusters = {index // 20 for index in first[0][:2]}
    assert clusters == {0, 1}
    gains = first[1].diff()  # a score is the batch's mutual information so far
    assert (gains > 0).all() and (gains <= first[1][0] + 0.05).all()  # no gain above the first pick's BALD


def test_zero_probabilities_are_handled():
    log_probs = random_log_probs(30, 5, 4, seed=4)
    log_probs[::3, :, 0] = float("-inf")
    log_probs = torch.log_softmax(log_probs, dim=2)
    picks, scores = batchbald_select(log_probs, 8, 64, torch.Generator().manual_seed(0))
    assert len(set(picks)) == 8 and torch.isfinite(scores).all()


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_empty(device):
    log_probs = random_log_probs(20, 4, 3, seed=8).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    assert batchbald_select(log_probs, 4, 3**3, generator)[0] == redux_batch(log_probs.cpu(), 4, 3**3)[0]
    assert batchbald_select(log_probs, 0, 100)[0] == []
    assert batchbald_select(log_probs[:0], 5, 100)[0] == []


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        ({"log_probs": [[[0.0]]]}, TypeError, "log_probs"),
        ({"log_probs": torch.zeros(2, 3)}, ValueError, "log_probs"),
        ({"log_probs": torch.zeros(2, 3, 4)}, ValueError, "log_probs"),  # not log-probabilities
        ({"log_probs": torch.full((2, 3, 1), float("nan"))}, ValueError, "log_probs"),
        ({"batch_size": -1}, ValueError, "batch_size"),
        ({"batch_size": 2.0}, ValueError, "batch_size"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 2}, ValueError, "num_samples"),  # fewer than K = 3
        ({"generator": 7}, TypeError, "generator"),
        ({"max_exact_configs": 0}, ValueError, "max_exact_configs"),
        ({"chunk_elements": 0}, ValueError, "chunk_elements"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, name):
    arguments = {"log_probs": random_log_probs(4, 3, 2, seed=0), "batch_size": 2, "num_samples": 10, **kwargs}
    with pytest.raises(error, match=f"`{name}`"):
        batchbald_select(**arguments)


# ---- the candidate keeper ----------------------------------------------------------------------------------------


def brute_force_top(scores, m):
    """Score descending, ties to the lower index, NaN last."""
    order = sorted(
        range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i] if scores[i] == scores[i] else 0, i)
    )
    return order[:m]


@pytest.mark.parametrize("seed", range(25))
def test_keeper_equals_brute_force_top_m_and_gather(seed):
    g = torch.Generator().manual_seed(seed)
    N, K, C = (int(torch.randint(1, high, (1,), generator=g)) for high in (400, 6, 6))
    m = int(torch.randint(0, 450, (1,), generator=g))
    scores = torch.randn(N, generator=g).round(decimals=1)  # many ties
    scores[torch.rand(N, generator=g) < 0.1] = float("nan")
    log_probs = torch.randn(N, K, C, generator=g)
    keeper = CandidateKeeper(m)
    blocks = []
    start = 0
    while start < N:
        size = int(torch.randint(0, 70, (1,), generator=g))
        blocks.append((start, min(start + size, N)))
        start += size
    for begin, end in reversed(blocks) if seed % 2 else blocks:  # any block order
        keeper.update(scores[begin:end], log_probs[begin:end], begin)
    index, kept = keeper.result()
    want = brute_force_top(scores.tolist(), m)
    assert index.tolist() == want
    assert torch.equal(kept, log_probs[want])
    assert keeper.scores.numel() == len(want)


def test_keeper_from_logits_ranks_by_bald_and_stores_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 500, 4, generator=g) * 2
    logits[:, 13] = float("nan")
    keeper = CandidateKeeper(50)
    for start in range(0, 500, 64):
        keeper.update_logits(logits[:, start : start + 64], start)
    index, kept = keeper.result()
    from entropy_al import mc_scores

    assert index.tolist() == brute_force_top(mc_scores(logits, "bald").tolist(), 50)
    torch.testing.assert_close(kept, torch.log_softmax(logits, 2).transpose(0, 1)[index])


def test_keeper_bad_arguments():
    with pytest.raises(ValueError, match="`m`"):
        CandidateKeeper(-1)
    keeper = CandidateKeeper(3)
    keeper.update(torch.rand(4), torch.randn(4, 2, 3), 0)
    with pytest.raises(ValueError, match="`log_probs`"):
        keeper.update(torch.rand(4), torch.randn(4, 2, 5), 4)
    with pytest.raises(ValueError, match="`scores`"):
        keeper.update(torch.rand(3), torch.randn(4, 2, 3), 4)
    with pytest.raises(ValueError, match="`offset`"):
        keeper.update(torch.rand(4), torch.randn(4, 2, 3), -1)
