"""The command line: ``entropy-al info`` and ``entropy-al demo`` (also ``python -m entropy_al ...``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .demo import DemoConfig

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import QUICK, STRATEGIES, DemoConfig

    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="entropy-al", description="Fast MC-dropout uncertainty sampling.")
    parser.add_argument("--version", action="version", version=f"entropy_al {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, devices and the active backend (and why)")

    demo = commands.add_parser(
        "demo",
        help="active learning on scikit-learn's digits: entropy vs BALD vs random",
        description="Active learning on scikit-learn's digits with an MC-dropout MLP: EntropySamplingDropout "
        "against BALDDropout and random selection over several seeds. Prints a table of test accuracy per round "
        "and writes it, the raw numbers and a learning-curve PNG to --out.",
    )
    # Defaults are None so that an explicit flag overrides --quick, and --quick overrides DemoConfig.
    option = dict(type=int, default=None)
    demo.add_argument("--rounds", **option, help=f"acquisition rounds (default {defaults.rounds})")
    demo.add_argument("--budget", **option, help=f"samples labelled per round (default {defaults.budget})")
    demo.add_argument("--initial", **option, help=f"random labelled seed set (default {defaults.initial})")
    demo.add_argument("--seeds", **option, help=f"number of seeds, 0..N-1 (default {defaults.seeds})")
    demo.add_argument("--epochs", **option, help=f"training epochs per round (default {defaults.epochs})")
    demo.add_argument("--n-drop", **option, help=f"MC-dropout passes (default {defaults.n_drop})")
    demo.add_argument("--dropout", type=float, default=None, help=f"dropout rate (default {defaults.dropout})")
    demo.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=None,
        help="strategies to compare (default: all but batchbald)",
    )
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    demo.add_argument("--out", default=None, help=f"output directory (default ./{defaults.out})")
    demo.add_argument("--quick", action="store_true", help=f"a seconds-long smoke run: {QUICK}")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _demo_config(args: argparse.Namespace) -> DemoConfig:
    import torch

    from .demo import QUICK, DemoConfig

    fields = (f.name for f in dataclasses.fields(DemoConfig))
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    if args.strategies is not None:
        given["strategies"] = tuple(args.strategies)
    given.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
    return DemoConfig(**{**(QUICK if args.quick else {}), **given, "progress": not args.no_progress})


def _run_info() -> int:
    from .info import collect_info, format_info

    print(format_info(collect_info()))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import check_config, run_demo

        config = _demo_config(args)
        import matplotlib  # noqa: F401  (fail here, before minutes of training, if it is missing)
        import sklearn  # noqa: F401
    except ImportError as exc:
        print(f"entropy-al demo needs scikit-learn and matplotlib: pip install 'entropy_al[demo]' ({exc})")
        return 1
    try:
        check_config(config)  # bad --device, --out, ...: one line now, not a traceback after the training
    except ValueError as exc:
        print(f"entropy-al demo: error: {exc}", file=sys.stderr)
        return 2
    result = run_demo(config)
    print()
    print(result.files["table"].read_text(), end="")
    print()
    select = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.select_seconds.items())
    print(f"total {result.seconds:.1f} s on {config.device}; time in selection: {select}")
    print(f"table:          {result.files['table']}")
    print(f"raw numbers:    {result.files['json']}")
    print(f"learning curve: {result.files['plot']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``entropy-al`` and ``python -m entropy_al``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return _run_info() if args.command == "info" else _run_demo(args)
