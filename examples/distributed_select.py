"""One selection, scored by every rank of a torch.distributed job: each rank scores a shard, every rank gets the result.

    torchrun --nproc_per_node=2 examples/distributed_select.py               # gloo on CPU, NCCL when CUDA is there
    torchrun --nproc_per_node=8 examples/distributed_select.py --pool 10000000 --budget 10000
    torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        examples/distributed_select.py --pool 100000000

Every rank builds the same pool and the same model (same seeds) and calls ``select`` with the same budget: with a
default process group initialized, ``select`` gives rank r the r-th contiguous shard of the pool, gathers each
rank's best ``budget`` candidates and merges them, so every rank returns the same list of global pool indices.
Rank 0 prints the selection, the time and the throughput. ``--check`` also runs the single-process selection on every
rank with a deterministic model (dropout off) and asserts that the distributed one equals it.

The pool here is synthetic (``dim``-d embeddings drawn from a seeded generator, as an MC head on a frozen backbone
would see them); replace ``embedding_pool`` and ``mc_head`` with your dataset and model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

# Run from a checkout too (the package built in place), as the benchmarks do.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from entropy_al import EntropySamplingDropout


def embedding_pool(num_samples: int, dim: int, seed: int = 0) -> TensorDataset:
    """``num_samples`` seeded ``dim``-d embeddings, the same on every rank. A tensor-backed pool is sliced once per
    batch; any map-style dataset works (each rank reads only its shard's items)."""
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(num_samples, dim, generator=generator))


def mc_head(dim: int, classes: int, dropout: float) -> nn.Module:
    torch.manual_seed(0)  # the same weights on every rank
    return nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=200_000, help="pool size (default 200000)")
    parser.add_argument("--dim", type=int, default=128, help="embedding width (default 128)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--n-drop", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="process group timeout (default 600 s)")
    parser.add_argument("--check", action="store_true", help="compare with the single-process selection")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if cuda:
        # NCCL exchanges tensors on the current device: one GPU per rank, chosen before the group is made.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=args.timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if not cuda:
        # Ranks on one host share its cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    # Different dropout masks on each rank: the shards are different samples anyway.
    torch.manual_seed(1000 + rank)

    pool = embedding_pool(args.pool, args.dim)
    settings = {"device": device, "batch_size": args.batch_size, "n_drop": args.n_drop}
    strategy = EntropySamplingDropout(None, pool, mc_head(args.dim, args.classes, 0.3), args.classes, settings)

    dist.barrier()
    started = time.perf_counter()
    selected = strategy.select(args.budget)
    seconds = time.perf_counter() - started

    # select() returns the same list on every rank; show that it does.
    everyone: list[list[int] | None] = [None] * world
    dist.all_gather_object(everyone, selected)
    assert all(other == selected for other in everyone), "ranks disagree"
    if rank == 0:
        backend = dist.get_backend()
        print(f"{world} ranks ({backend}, {device.type}), pool {args.pool}, budget {args.budget}, n_drop {args.n_drop}")
        print(f"selected {len(selected)} samples in {seconds:.2f} s: {args.pool / seconds:,.0f} pool samples/s")
        print(f"first 10: {selected[:10]}")

    if args.check:
        # Deterministic scores (dropout probability 0) make the two selections comparable exactly.
        check = dict(settings)
        model = mc_head(args.dim, args.classes, 0.0)
        across = EntropySamplingDropout(None, pool, model, args.classes, check).select(args.budget)
        alone = EntropySamplingDropout(None, pool, model, args.classes, dict(check, distributed=False)).select(
            args.budget
        )
        assert across == alone, "the distributed selection differs from the single-process one"
        if rank == 0:
            print("check: the distributed selection equals the single-process selection")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
