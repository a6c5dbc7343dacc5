"""The sampling law of stochastic acquisition: over thousands of seeds, the first pick and the first ordered pair
of a small pool with known scores follow Plackett–Luce with weights s^β ("power") or exp(β s) ("softmax")."""

import itertools
import math

import pytest
import scipy.stats
import torch

import entropy_al
from entropy_al import ops, reference

SCORES = [0.05, 0.3, 0.6, 1.0, 1.7]  # entropy-like (nats), distinct
DRAWS = 6000
EMPTY = torch.empty(0, dtype=torch.int64)


def weights(acquisition, coldness):
    if acquisition == "power":
        return [s**coldness for s in SCORES]
    return [math.exp(coldness * s) for s in SCORES]


def first_two_picks(acquisition, coldness, draws, first_seed):
    """(first, second) pool index of the selection for `draws` consecutive seeds."""
    scores = torch.tensor(SCORES)
    picks = []
    for seed in range(first_seed, first_seed + draws):
        _, index = reference.decode_keys(ops.topk_update(scores, EMPTY, 0, 2, acquisition, coldness, seed))
        picks.append(tuple(index.tolist()))
    return picks


def chi_square_pvalue(picks, probabilities):
    """p-value of the observed counts of each outcome against its probability; outcomes expected fewer than 5
    times are pooled into one bin (with the rarest other outcome if the pool is still under 5)."""
    expected = {outcome: len(picks) * p for outcome, p in probabilities.items()}
    observed = dict.fromkeys(expected, 0)
    for pick in picks:
        observed[pick] += 1
    ranked = sorted(expected, key=expected.get)
    rare = [outcome for outcome in ranked if expected[outcome] < 5]
    if rare and sum(expected[o] for o in rare) < 5:
        rare = ranked[: len(rare) + 1]
    bins = [[outcome] for outcome in ranked if outcome not in rare] + ([rare] if rare else [])
    counts = [sum(observed[o] for o in group) for group in bins]
    means = [sum(expected[o] for o in group) for group in bins]
    return scipy.stats.chisquare(counts, means).pvalue


def plackett_luce(w):
    total = sum(w)
    first = {(i,): w[i] / total for i in range(len(w))}
    pairs = {(i, j): w[i] / total * w[j] / (total - w[i]) for i, j in itertools.permutations(range(len(w)), 2)}
    return first, pairs


@pytest.mark.skipif(entropy_al.backend("cpu") == "torch", reason="thousands of fallback calls are slow")
@pytest.mark.parametrize("acquisition, coldness", [("power", 1.0), ("power", 2.0), ("softmax", 1.0), ("softmax", 3.0)])
def test_picks_follow_plackett_luce(acquisition, coldness):
    picks = first_two_picks(acquisition, coldness, DRAWS, first_seed=1000)
    first, pairs = plackett_luce(weights(acquisition, coldness))
    # Fixed seeds: deterministic; a wrong law (e.g. coldness ignored, or s instead of log s) fails by far.
    assert chi_square_pvalue([p[:1] for p in picks], first) > 1e-3
    assert chi_square_pvalue(picks, pairs) > 1e-3


@pytest.mark.skipif(entropy_al.backend("cpu") == "torch", reason="thousands of fallback calls are slow")
def test_a_wrong_law_is_rejected():
    """The test above can fail: power picks checked against the softmax law (and β = 2 against β = 1)."""
    picks = first_two_picks("power", 2.0, DRAWS, first_seed=1000)
    assert chi_square_pvalue([p[:1] for p in picks], plackett_luce(weights("softmax", 2.0))[0]) < 1e-6
    assert chi_square_pvalue([p[:1] for p in picks], plackett_luce(weights("power", 1.0))[0]) < 1e-6


def test_fallback_follows_the_same_law():
    """The fallback draws the compiled kernels' keys (tested bit for bit elsewhere); a few hundred draws check it on
    its own too, also where the extension is not built."""
    scores = torch.tensor(SCORES)
    picks = []
    for seed in range(400):
        keys = reference.topk_update_reference(scores, EMPTY, 0, 1, "softmax", 2.0, seed)
        picks.append(tuple(reference.decode_keys(keys)[1].tolist()))
    assert chi_square_pvalue(picks, plackett_luce(weights("softmax", 2.0))[0]) > 1e-3
