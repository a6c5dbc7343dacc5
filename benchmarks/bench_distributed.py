"""The two costs of a distributed select(): scoring a shard (per rank) and gathering + merging the candidates.

    python benchmarks/bench_distributed.py                       # CPU: MC head, N = 200k, and gloo gathers
    python benchmarks/bench_distributed.py --device cuda --pool 2000000
    python benchmarks/bench_distributed.py --skip-select --worlds 2 4 --budgets 1000 100000

Part 1, one process: select() on the MC head of examples/distributed_select.py (128 → 64 → 10, dropout), split into
the data path alone (fetch + collate + copy to the device; the example's tensor-backed pool, and the same rows behind
a plain ``__getitem__``), the n_drop forwards alone, and the whole select. These are the per-rank rates of
docs/scaling.md: a rank's time is its shard size over them.
Part 2, W processes on this host (gloo over loopback TCP): the exchange select() does after scoring, one all_gather
of a [budget + 4] int64 row per rank, then the merge (a top-k over W · budget keys), for each world size and budget.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT, os.path.join(ROOT, "examples")]
from common import machine_description, print_table  # noqa: E402
from distributed_select import embedding_pool, mc_head  # noqa: E402

from entropy_al import EntropySamplingDropout  # noqa: E402
from entropy_al.mc import iter_batches, mc_mode  # noqa: E402


def _best_of(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and best CPU time of this process (robust to other processes sharing the cores)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def bench_select(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pool = embedding_pool(args.pool, 128)
    item_by_item = _ItemByItem(pool.tensors[0])
    model = mc_head(128, 10, 0.3).to(device)
    settings = {"device": device, "batch_size": args.batch_size, "n_drop": args.n_drop}
    strategy = EntropySamplingDropout(None, pool, model, 10, settings)

    def data_only(dataset) -> None:
        for *_, _inputs in iter_batches(dataset, args.batch_size, 10000, device, "bench"):
            pass

    def forwards_only() -> None:
        with torch.no_grad(), mc_mode(model, "dropout"):
            for *_, inputs in iter_batches(pool, args.batch_size, 10000, device, "bench"):
                for _ in range(args.n_drop):
                    model(inputs)

    rows = []
    for name, fn in [
        ("data path, tensor-backed pool (TensorDataset)", lambda: data_only(pool)),
        ("data path, item-by-item pool (__getitem__ only)", lambda: data_only(item_by_item)),
        (f"data + {args.n_drop} forwards", forwards_only),
        (f"select({args.budget})", lambda: strategy.select(args.budget)),
    ]:
        wall, cpu = _best_of(fn, args.repeats)
        rows.append([name, f"{wall:.2f} s", f"{cpu:.2f} s", f"{args.pool / wall:,.0f}", f"{args.pool / cpu:,.0f}"])
    print(
        f"\n{machine_description(args.device)}; pool {args.pool} × 128-d, batch {args.batch_size}, "
        f"n_drop {args.n_drop} (best of {args.repeats})"
    )
    headers = ["work (one process)", "wall", "CPU time", "samples/s (wall)", "samples/CPU-s"]
    print_table(headers, rows)


class _ItemByItem(torch.utils.data.Dataset):
    """The same rows behind a plain ``__getitem__``: fetched and collated item by item, like most user datasets."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.rows[index]


def _gather_rank(rank: int, world: int, init: str, budgets: list[int], repeats: int, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    results = []
    for budget in budgets:
        row = torch.randint(-(1 << 62), 1 << 62, (budget + 4,), dtype=torch.int64)
        gather, merge = [], []
        for _ in range(repeats):
            dist.barrier()
            started = time.perf_counter()
            rows = [torch.empty_like(row) for _ in range(world)]
            dist.all_gather(rows, row)
            middle = time.perf_counter()
            torch.cat([r[4:] for r in rows]).topk(budget, sorted=True)
            done = time.perf_counter()
            gather.append(middle - started)
            merge.append(done - middle)
        results.append((budget, statistics.median(gather), statistics.median(merge)))
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def bench_gather(args: argparse.Namespace) -> None:
    context = multiprocessing.get_context("spawn")
    rows = []
    for world in args.worlds:
        with tempfile.TemporaryDirectory() as tmp:
            queue = context.Queue()
            init = "file://" + os.path.join(tmp, "store")
            procs = [
                context.Process(target=_gather_rank, args=(r, world, init, args.budgets, args.repeats * 5, queue))
                for r in range(world)
            ]
            for proc in procs:
                proc.start()
            results = queue.get(timeout=300)
            for proc in procs:
                proc.join()
        for budget, gather, merge in results:
            megabytes = world * (budget + 4) * 8 / 1e6
            times = [f"{gather * 1e3:.2f} ms", f"{merge * 1e3:.2f} ms"]
            rows.append([str(world), str(budget), f"{megabytes:.3f}", *times])
    print(f"\ngloo all_gather over loopback, {os.cpu_count()} cores, torch {torch.__version__} (median)")
    print_table(["ranks", "budget", "MB received per rank", "all_gather", "merge (top-k of W·budget)"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pool", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--n-drop", type=int, default=10)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of part 1 (default 1: per core)")
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--skip-select", action="store_true")
    parser.add_argument("--skip-gather", action="store_true")
    args = parser.parse_args()
    if not args.skip_select:
        bench_select(args)
    if not args.skip_gather:
        bench_gather(args)


if __name__ == "__main__":
    main()
