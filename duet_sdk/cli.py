"""``duet``: one console entry for every step, from training to serving.

``duet <command> [args]`` runs the command's own CLI (``duet <command> --help``); the commands load lazily,
so ``duet serve`` never imports torch. The ``duet-train``, ``duet-export``, ... scripts stay as aliases.
Exit codes: 0 ok, 2 bad input (or a part that is not installed), 3 a gate rejection.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from duet_sdk import __version__
from duet_sdk._extras import MissingDependencyError, missing_extra
from duet_sdk.cli_common import EXIT_BAD_INPUT

# command -> (module, function taking argv and returning the exit code, summary)
COMMANDS = {
    "train": ("duet_sdk.training.cli", "main", "train ClickAUN/ConvAUN or the ranker behind the checkpoint gate"),
    "experiment": ("duet_sdk.experiments.cli", "main", "reproduce the paper's analyses (table1, dare, sweep)"),
    "export": ("duet_sdk.export.cli", "main", "export accepted checkpoints to verified serving artifacts"),
    "publish": ("duet_sdk.serving.cli", "publish_main", "publish an export as a release of a model repository"),
    "serve": ("duet_sdk.serving.cli", "serve_main", "run tritonserver on a published model repository"),
    "bench": ("benchmarks.bench", "main", "performance benchmarks (from a source checkout)"),
    "tune": ("duet_sdk.tune.cli", "main", "tune a release's serving configs for a latency or throughput objective"),
}
NOT_INSTALLED = {
    "bench": "duet bench runs from a source checkout of duet_sdk (the benchmarks/ package is not in the wheel): "
    "run it in the checkout's root directory",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="duet",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<11} {summary}" for name, (_, _, summary) in COMMANDS.items()),
    )
    p.add_argument("--version", action="version", version=f"duet (duet_sdk) {__version__}")
    p.add_argument("command", choices=tuple(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments (duet <command> --help)")
    return p


def _load(command: str):
    """The command's main function; MissingDependencyError or a message for a part not installed."""
    module, function, _ = COMMANDS[command]
    if command == "bench" and (Path.cwd() / "benchmarks" / "bench.py").is_file() and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # a source checkout: benchmarks/ sits beside duet_sdk/
    try:
        return getattr(importlib.import_module(module), function)
    except MissingDependencyError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")) and command in NOT_INSTALLED:
            raise LookupError(NOT_INSTALLED[command]) from exc
        raise missing_extra(exc, module) from exc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run = _load(args.command)
    except (LookupError, ModuleNotFoundError) as exc:
        print(f"duet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(args.args)


if __name__ == "__main__":
    sys.exit(main())
