"""Greedy BatchBALD (Kirsch et al., NeurIPS 2019) over a candidate set of MC-dropout log-probabilities.

BatchBALD grows the batch one sample at a time, each time adding the candidate ``x`` that maximizes the mutual
information of the joint labels with the model, ``I(y_B, y_x; ω) − I(y_B; ω) = H(y_B, y_x) − H(y_x | ω) −
Σ_{b∈B} H(y_b | ω)``, with the K MC-dropout passes as the model samples. The joint entropy ``H(y_B, y_x)`` of
every candidate is one product of the batch's configuration probabilities ``[S, K]`` with the candidate's
``[K, C]`` class probabilities, then an entropy: computed here for all candidates at once (one matrix product per
chunk of candidates, float64), exactly over the ``C^|B|`` configurations while they fit ``max_exact_configs``, by
importance sampling beyond (``num_samples`` configurations, the same number drawn from each pass's distribution,
redrawn at each step). The choices are those of ``batchbald_redux.get_batchbald_batch``.

The candidate pre-filter (:class:`entropy_al.selection.candidates.CandidateKeeper`): BatchBALD costs
O(batch · candidates · S · C) and needs every candidate's ``[K, C]`` probabilities, so on a large pool the greedy
runs on the ``m`` samples of highest BALD only (kept while the pool streams by, O(m · K · C) memory). The trade:
the first pick is BALD's best either way, and a later pick can only be missed if it lies outside the candidates.
The gain of a sample given the batch never exceeds its own BALD (the joint mutual information is submodular), so
a greedy step whose winning gain is above the m-th candidate's BALD is provably the full pool's step too; the
pre-filter changes the batch only once the gains fall below that bar, i.e. when the candidates are so redundant
among themselves that an outsider of lower BALD would add more. Then the batch is a good, not the best greedy,
batch. ``m`` ≫ batch (e.g. max(10 · batch, 1000)) keeps that rare; ``m`` = the pool is the exact method.
"""

from __future__ import annotations

import operator

import torch

from .. import ops

__all__ = ["batchbald_select"]

# Elements of one [S, chunk · C] temporary of the joint-entropy update: 32 MiB in float64.
DEFAULT_CHUNK_ELEMENTS = 1 << 22
# Inputs must be log-probabilities: logsumexp over the classes within this of 0.
_NORMALIZATION_TOLERANCE = 1e-3
# Scores within this many float64 epsilons (relative to the joint entropies) are tied: the lower index wins.
_TIE_EPSILONS = 16


def _positive_int(name: str, value: object) -> int:
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"batchbald_select: expected `{name}` to be an int >= 1, got {value!r}")
    return number


def _check_log_probs(log_probs: object) -> None:
    if not isinstance(log_probs, torch.Tensor):
        raise TypeError(f"batchbald_select: expected `log_probs` to be a torch.Tensor, got {type(log_probs).__name__}")
    if log_probs.dim() != 3 or not log_probs.is_floating_point():
        raise ValueError(
            "batchbald_select: expected `log_probs` to be a floating tensor of shape [M, K, C], got "
            f"{log_probs.dtype} of shape {list(log_probs.shape)}"
        )
    M, K, C = log_probs.shape
    if K < 1 or C < 1:
        raise ValueError(
            f"batchbald_select: expected `log_probs` with K >= 1 passes and C >= 1 classes, got {[M, K, C]}"
        )
    if M == 0:
        return
    if bool((torch.isnan(log_probs) | (log_probs == float("inf"))).any()):
        raise ValueError("batchbald_select: `log_probs` contains NaN or +inf")
    total = torch.logsumexp(log_probs.to(torch.float64), dim=2)
    if bool(((total.abs() > _NORMALIZATION_TOLERANCE) | total.isinf()).any()):
        raise ValueError(
            "batchbald_select: expected `log_probs` to be log-probabilities (logsumexp over the classes = 0), got "
            f"a row with logsumexp {total.flatten()[(total.abs() > _NORMALIZATION_TOLERANCE).flatten()][0].item():g}"
        )


def _check_generator(generator: object, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"batchbald_select: expected `generator` to be a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator.device.type != device.type:
        raise ValueError(
            f"batchbald_select: expected `generator` on {device.type} like `log_probs`, got one on {generator.device}"
        )


def _class_probs(log_probs: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 ``[K, M·C]`` probabilities, candidate m's classes at columns m·C …; float64 ``[M]`` H(y | ω))."""
    M, K, C = log_probs.shape
    probs = torch.empty(K, M, C, dtype=torch.float64, device=log_probs.device)
    conditional = torch.empty(M, dtype=torch.float64, device=log_probs.device)
    rows = max(1, chunk // (K * C))
    for start in range(0, M, rows):
        lp = log_probs[start : start + rows].to(torch.float64)
        p = lp.exp()
        probs[:, start : start + rows] = p.transpose(0, 1)
        # 0 · log 0 = 0: a class of probability 0 adds nothing.
        p_log_p = torch.where(p > 0, p * lp, torch.zeros_like(p))
        conditional[start : start + rows] = -p_log_p.sum(dim=(1, 2)) / K
    return probs.view(K, M * C), conditional


class _Configurations:
    """The chosen batch's label configurations: ``probs[s, k]`` = p(configuration s | pass k) / scale_s.

    Exact: all C^b configurations, scale 1, weight 1. Sampled: configurations drawn from the passes' mixture,
    each stored relative to its largest pass probability (``log_scale``) so that long batches cannot underflow,
    weighted by 1 / (S · q_s), q_s its (scaled) mixture probability: the importance-sampling estimate.
    """

    def __init__(self, probs: torch.Tensor, log_scale: torch.Tensor | None = None):
        self.joint = probs
        self.probs = probs / probs.shape[1]  # the mixture over passes is then a plain matrix product
        self.log_scale = log_scale
        if log_scale is None:
            self.weights = torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
        else:
            self.weights = 1.0 / (self.probs.sum(dim=1) * probs.shape[0])

    @staticmethod
    def exact_extension(previous: _Configurations, new_probs_K_C: torch.Tensor) -> _Configurations:
        K, C = new_probs_K_C.shape
        # Configuration (s, c) of the grown batch is row s · C + c.
        grown = previous.joint.t()[:, :, None] * new_probs_K_C[:, None, :]
        return _Configurations(grown.reshape(K, -1).t())

    @staticmethod
    def sampled(chosen_probs: torch.Tensor, num_samples: int, generator: torch.Generator | None) -> _Configurations:
        """``chosen_probs``: ``[b, K, C]``; ``num_samples // K`` configurations drawn from each pass."""
        b, K, C = chosen_probs.shape
        per_pass = num_samples // K
        draws = torch.multinomial(chosen_probs.reshape(b * K, C), per_pass, replacement=True, generator=generator)
        draws = draws.view(b, 1, K * per_pass).expand(b, K, K * per_pass)  # configuration k · per_pass + s
        log_joint = torch.zeros(K, K * per_pass, dtype=chosen_probs.dtype, device=chosen_probs.device)
        for item in range(b):
            log_joint += torch.gather(chosen_probs[item], 1, draws[item]).log()
        log_scale = log_joint.max(dim=0).values
        return _Configurations((log_joint - log_scale).exp().t(), log_scale)

    def joint_entropies(self, probs_K_MC: torch.Tensor, num_classes: int, chunk: int) -> torch.Tensor:
        """H(y_batch, y_m) of every candidate m: float64 ``[M]``."""
        S = self.probs.shape[0]
        M = probs_K_MC.shape[1] // num_classes
        out = torch.empty(M, dtype=torch.float64, device=probs_K_MC.device)
        rows = max(1, chunk // (S * num_classes))
        buffers = torch.empty(2, S * min(rows, M) * num_classes, dtype=torch.float64, device=probs_K_MC.device)
        scaled_weights = None if self.log_scale is None else self.weights * self.log_scale
        for start in range(0, M, rows):
            stop = min(start + rows, M)
            width = (stop - start) * num_classes
            joint = buffers[0, : S * width].view(S, width)
            torch.matmul(self.probs, probs_K_MC[:, start * num_classes : stop * num_classes], out=joint)
            nats = torch.special.xlogy(joint, joint, out=buffers[1, : S * width].view(S, width))
            entropy = -(self.weights @ nats)
            if scaled_weights is not None:  # log p = log(p / scale) + log scale
                entropy -= scaled_weights @ joint
            out[start:stop] = entropy.view(stop - start, num_classes).sum(dim=1)
        return out


def batchbald_select(
    log_probs: torch.Tensor,
    batch_size: int,
    num_samples: int = 1000,
    generator: torch.Generator | None = None,
    *,
    max_exact_configs: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[list[int], torch.Tensor]:
    """Greedy BatchBALD batch of ``min(batch_size, M)`` candidates.

    Args:
        log_probs: ``[M, K, C]`` log-probabilities of M candidates under K MC-dropout passes (each ``[k]`` row a
            distribution over the C classes; ``-inf`` is probability 0); any float dtype, CPU or CUDA. Computed
            in float64 on its device.
        batch_size: how many to pick (``>= 0``).
        num_samples: sampled configurations once the batch's ``C^b`` exceeds ``max_exact_configs``
            (``num_samples // K`` from each pass; ``>= K``).
        generator: the ``torch.Generator`` (on the device of ``log_probs``) the sampled configurations are drawn
            from; ``None`` for torch's default one. The exact regime draws nothing.
        max_exact_configs: the exact joint entropy is used while ``C^b <= max_exact_configs``; default
            ``num_samples`` (as ``batchbald_redux``).
        chunk_elements: candidates are processed in chunks whose ``[S, chunk · C]`` temporaries have at most this
            many elements (two float64 buffers), so memory stays bounded for any M.

    Returns:
        (indices, scores): the picks in order (Python ints into ``log_probs``) and float64 ``[b]`` CPU tensor of
        each pick's score: the mutual information of the batch so far (with the pick ``x``) with the model,
        ``H(y_B, y_x) − H(y_x|ω) − Σ_B H(y_b|ω)``, as ``batchbald_redux`` reports it; the first is BALD. Ties
        (scores within float64 rounding of the joint entropies) go to the lower index.
    """
    _check_log_probs(log_probs)
    batch_size = ops.check_index("batchbald_select", "batch_size", batch_size)
    num_samples = _positive_int("num_samples", num_samples)
    chunk_elements = _positive_int("chunk_elements", chunk_elements)
    bound = num_samples if max_exact_configs is None else _positive_int("max_exact_configs", max_exact_configs)
    _check_generator(generator, log_probs.device)
    M, K, C = log_probs.shape
    if num_samples < K:
        raise ValueError(
            f"batchbald_select: expected `num_samples` >= K = {K} (configurations are drawn per pass), got {num_samples}"
        )
    steps = min(batch_size, M)
    if steps == 0:
        return [], torch.empty(0, dtype=torch.float64)

    probs_K_MC, conditional = _class_probs(log_probs, chunk_elements)
    taken = torch.zeros(M, dtype=torch.bool, device=log_probs.device)
    configurations = _Configurations(torch.ones(1, K, dtype=torch.float64, device=log_probs.device))  # no batch
    picks: list[int] = []
    pick_scores = []
    for _ in range(steps):
        if picks and C ** len(picks) <= bound:
            latest = probs_K_MC[:, picks[-1] * C : (picks[-1] + 1) * C]
            configurations = _Configurations.exact_extension(configurations, latest)
        elif picks:
            chosen = probs_K_MC.view(K, M, C)[:, picks].transpose(0, 1)
            configurations = _Configurations.sampled(chosen, num_samples, generator)
        entropies = configurations.joint_entropies(probs_K_MC, C, chunk_elements)
        shared = conditional[picks].sum()
        scores = entropies - (conditional + shared)
        ranked = scores.masked_fill(taken, float("-inf"))
        tolerance = _TIE_EPSILONS * torch.finfo(torch.float64).eps * (1 + entropies.abs().max())
        tied = (ranked >= ranked.max() - tolerance) & ~taken
        pick = int(torch.argmax(tied.to(torch.uint8)).item())  # the first of the tied: the lower index
        taken[pick] = True
        picks.append(pick)
        pick_scores.append(scores[pick])
    return picks, torch.stack(pick_scores).cpu()
