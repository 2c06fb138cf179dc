"""The ``bayesdl`` command.

Usage::

    bayesdl compare --task toy1d [--methods map,mfvi] [--out reports/toy1d] [--seed 0]
                    [--split 0] [--smoke] [--epochs N] [--samples S] [--threads N]
                    [--device cpu] [--progress | --no-progress] [--quiet]
                    [--prior default|fixed-gaussian|fixed-hierarchical|gp-matched|...]
    bayesdl list
    bayesdl --version

``python -m bayesdl ...`` is the same. Exit status: 0 on success, 2 for bad arguments (an
unknown task or method, a malformed number), 1 when a run fails.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayesdl`` command."""
    from bayesdl import __version__

    parser = argparse.ArgumentParser(
        prog="bayesdl", description="Bayesian deep learning on Pyro: compare inference methods."
    )
    parser.add_argument("--version", action="version", version=f"bayesdl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    cmp = sub.add_parser(
        "compare",
        help="run several inference methods on one task; print a table, write a report",
        description=(
            "Fit each method on the task's training set, score it on the test set (regression: "
            "RMSE, NLL, 95%% coverage in original y units; classification: accuracy, NLL, ECE, "
            "Brier) and print a table. With --out, also write report.md, results.json and "
            "figures (predictive bands for 1-D tasks, reliability diagrams for classification)."
        ),
    )
    cmp.add_argument("--task", required=True, help="task name (see `bayesdl list`)")
    cmp.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names (default: every registered method)",
    )
    cmp.add_argument("--out", default=None, help="report folder to write (default: none)")
    cmp.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    cmp.add_argument(
        "--split",
        type=_non_negative_int,
        default=0,
        help="train/test split (UCI, classification) or data seed (toy1d); default 0",
    )
    cmp.add_argument(
        "--smoke", action="store_true", help="tiny budget (a few steps per method), for tests"
    )
    cmp.add_argument(
        "--epochs", type=_positive_int, default=None, help="override every method's epochs"
    )
    cmp.add_argument(
        "--samples",
        type=_positive_int,
        default=None,
        help="override the number of posterior / predictive samples",
    )
    cmp.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: these small networks run fastest on one)",
    )
    cmp.add_argument(
        "--device", default=None, help="torch device for data and models (default cpu)"
    )
    cmp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: on for a terminal unless BAYESDL_PROGRESS=0)",
    )
    cmp.add_argument(
        "--prior",
        default="default",
        help=(
            "weight prior: default, fixed-gaussian, fixed-hierarchical, gp-matched (fitted to "
            "a GP by Wasserstein matching) or gp-matched-hierarchical; hierarchical priors "
            "need sampler methods (sghmc, sgld, nuts)"
        ),
    )
    cmp.add_argument("--quiet", action="store_true", help="print only the table")

    sub.add_parser("list", help="list the available tasks and methods")
    return parser


def _error(parser: argparse.ArgumentParser, command: str, message: str) -> int:
    print(f"{parser.prog} {command}: error: {message}", file=sys.stderr)
    return 2


def _run_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from bayesdl import compare as cmp

    try:
        task_name = cmp._canonical_task(args.task)
        methods = cmp._method_names(args.methods)
        if args.prior not in cmp.PRIOR_NAMES:
            raise ValueError(
                f"unknown prior {args.prior!r}; available priors: {', '.join(cmp.PRIOR_NAMES)}"
            )
    except (TypeError, ValueError) as e:
        return _error(parser, "compare", str(e))
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            return _error(parser, "compare", f"bad --device {args.device!r}: {e}")
        if device.type == "cuda" and not torch.cuda.is_available():
            return _error(parser, "compare", f"--device {args.device} but CUDA is not available")
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        task = cmp.load_task(task_name, split=args.split, device=args.device)
        result = cmp.compare(
            task,
            methods,
            seed=args.seed,
            out=args.out,
            smoke=args.smoke,
            num_epochs=args.epochs,
            num_samples=args.samples,
            progress=args.progress,
            num_threads=args.threads,
            log=log,
            prior=args.prior,
        )
    except (ImportError, RuntimeError, ValueError, OSError) as e:
        print(f"bayesdl compare: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    result.print()
    if result.out is not None and not args.quiet:
        print(f"report written to {result.out / 'report.md'}", file=sys.stderr)
    return 0


def _run_list() -> int:
    from bayesdl import compare as cmp
    from bayesdl.data import CLASSIFICATION_DATASETS, UCI_DATASETS

    print("tasks:")
    print("  1-D toy:        toy1d")
    print(f"  UCI regression: {', '.join(UCI_DATASETS)}")
    print(f"  classification: {', '.join(CLASSIFICATION_DATASETS)}")
    print("methods:")
    for name in cmp.available_methods():
        doc = (cmp.get_method(name).__doc__ or "").strip().splitlines()
        # first docstring line, Sphinx roles reduced to their last name
        line = re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`", r"\1", doc[0]) if doc else ""
        print(f"  {name:<8} {line}".rstrip())
    print(f"priors (--prior): {', '.join(cmp.PRIOR_NAMES)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bayesdl`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns:
        the exit status (0 success, 1 failed run, 2 bad arguments). ``--help`` and
        ``--version`` print and return 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help, --version and bad arguments
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command == "compare":
        return _run_compare(args, parser)
    if args.command == "list":
        return _run_list()
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
