"""What every ``duet`` command shares: a parser that shows defaults and ``--version``, and ``-v/-q`` logging.

Library code logs through ``logging.getLogger(__name__)``; only a command configures logging, here.

>>> p = command_parser("duet-train", "Train encoders.")
>>> args = p.parse_args(["-v"])
>>> configure_logging(args)  # INFO and up on stderr
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys

from duet_sdk import __version__
from duet_sdk.errors import ConfigError, DuetError

EXIT_OK, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 2, 3  # the exit codes of every duet command


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to each option's help, except where the default is None/False or the help
    already says what the default is."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action = copy.copy(action)  # an option without help still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in help_text:
            return action.help
        return super()._get_help_string(action)


# The loggers -v/-q govern: the package's and the running script's.
OWN_LOGGERS = ("duet_sdk", "__main__")


def command_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser with defaults shown in ``--help``, ``--version`` and ``-v/-q``."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s (duet_sdk) {__version__}")
    add_logging_arguments(p)
    return p


def add_logging_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less log output (-qq: critical only)")


def configure_logging(args: argparse.Namespace, default: int = logging.WARNING) -> int:
    """Log on stderr at ``default`` lowered by each -v, raised by each -q; returns that level.

    The level applies to this package's loggers (and ``__main__``); other libraries' loggers (the ONNX
    exporter's optimiser passes, for one) stay at WARNING unless the level is DEBUG (-vv)."""
    steps = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    level = min(max(default - 10 * steps, logging.DEBUG), logging.CRITICAL)
    logging.basicConfig(
        level=level if level <= logging.DEBUG else max(level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    return level


def report_errors(program: str, fn, args: argparse.Namespace) -> int:
    """``fn(args)``; a DuetError is printed as ``program: error: ...`` (no traceback; messages redact URLs):
    exit status 2 for bad configuration, 1 for anything else (a server or Redis that is not there)."""
    try:
        return fn(args)
    except ConfigError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DuetError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 1
