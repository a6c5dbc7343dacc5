"""The selection layer's distributed helpers, without a strategy: shards, the group to use, the collectives' device."""

from __future__ import annotations

import pytest
import torch

from entropy_al.selection import collective_device, distributed_group, shard_bounds


def test_no_group_without_torch_distributed_unless_required():
    assert distributed_group("where", None) is None
    assert distributed_group("where", False) is None
    with pytest.raises(RuntimeError, match=r"args\['distributed'\] = True but torch.distributed has no default"):
        distributed_group("where", True)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7, 16])
def test_shards_tile_the_pool(world):
    for num_samples in [0, 1, 2, 3, 5, 16, 23, 100]:
        bounds = [shard_bounds(num_samples, rank, world) for rank in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == num_samples
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:], strict=False))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


@pytest.mark.parametrize("cuda", [True, False])
def test_nccl_exchanges_on_the_current_cuda_device(monkeypatch, cuda):
    from entropy_al.selection import distributed as selection_distributed

    monkeypatch.setattr(selection_distributed.dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    if cuda:
        assert collective_device("where", None) == torch.device("cuda", 1)
    else:
        with pytest.raises(RuntimeError, match="takes neither CPU tensors nor CUDA tensors on a visible GPU"):
            collective_device("where", None)
