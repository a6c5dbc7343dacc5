"""The MC engine's entry point, through its layer API: blocks of an index range, pool offsets, state restored."""

from __future__ import annotations

import contextlib

import pytest
import torch
from strategy_fixtures import NUM_CLASSES, FeatureNet, assert_same_tensors, make_pool, module_flags, tensor_snapshot

from entropy_al.mc import MCPlan, mc_logit_blocks


def plan(**changes) -> MCPlan:
    base = dict(n_drop=3, batch_size=4, buffer_size=100, nclasses=NUM_CLASSES, device=torch.device("cpu"), where="t")
    return MCPlan(**{**base, **changes})


def collect(model, pool, mc_plan, start=0, stop=None):
    with contextlib.closing(mc_logit_blocks(model, pool, mc_plan, start, stop)) as blocks:
        return [(offset, logits.clone()) for offset, logits in blocks]


@pytest.mark.parametrize("reproduce_distil", [False, True])
def test_a_range_yields_the_whole_pools_blocks_at_pool_offsets(reproduce_distil):
    pool, model = make_pool(23), FeatureNet(dropout=0.0)
    mc_plan = plan(reproduce_distil=reproduce_distil, mc_mode="train" if reproduce_distil else "dropout")
    with pytest.warns(UserWarning, match="no dropout module") if not reproduce_distil else contextlib.nullcontext():
        whole = torch.cat([logits for _, logits in collect(model, pool, mc_plan)], dim=1)
        blocks = collect(model, pool, mc_plan, 9, 20)
    assert blocks[0][0] == 9 and all(isinstance(offset, int) for offset, _ in blocks)
    part = torch.cat([logits for _, logits in blocks], dim=1)
    assert part.shape == (3, 11, NUM_CLASSES)
    torch.testing.assert_close(part, whole[:, 9:20])


def test_keyed_masks_of_a_range_are_those_of_the_whole_pool():
    pool, model = make_pool(30), FeatureNet(dropout=0.5)
    mc_plan = plan(mc_seed=7, memory_budget=1 << 20)
    whole = torch.cat([logits for _, logits in collect(model, pool, mc_plan)], dim=1)
    part = torch.cat([logits for _, logits in collect(model, pool, mc_plan, 13, 30)], dim=1)
    torch.testing.assert_close(part, whole[:, 13:])
    assert not torch.equal(whole[0], whole[1]), "the passes differ: dropout is on"


def test_closing_early_restores_the_model_and_an_empty_range_runs_nothing():
    pool, model = make_pool(40), FeatureNet(dropout=0.5, batchnorm=True)
    model.train()
    flags, tensors = module_flags(model), tensor_snapshot(model)
    blocks = mc_logit_blocks(model, pool, plan(mc_mode="train", mc_seed=3))
    next(blocks)
    assert "forward" in model.body[3].__dict__, "keyed dropout is active while the blocks run"
    blocks.close()
    assert module_flags(model) == flags and "forward" not in model.body[3].__dict__
    assert_same_tensors(model, tensors)
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    assert collect(model, pool, plan(), 5, 5) == [] and not calls
