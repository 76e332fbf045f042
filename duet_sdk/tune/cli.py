"""``duet-tune``: tune a release's Triton configs for a stated objective, measure the Pareto front, and
publish the choice as a new release.

    duet-tune --model-repository model_repository --objective throughput --slo-p99-ms 20 --concurrency 8
    duet-tune --model-repository model_repository --objective latency --rate 50 --budget-s 300

Serves a scratch copy of the release (default: the current one) on a private tritonserver, searches
each pipeline's components (``search.py``), writes ``tune.json`` and ``tune.md`` under ``--out``, and,
when every pipeline has a measured config that meets the objective, publishes release V+1 with the
chosen configs (the target, unless ``--no-activate``; ``--no-publish`` only reports). Exit status: 0
done; 2 bad input; 3 some pipeline had no measured config meeting the objective (report written,
nothing published); 1 the server or a measurement failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from duet_sdk import interface as api
from duet_sdk.cli_common import command_parser, configure_logging, report_errors
from duet_sdk.errors import ConfigError
from duet_sdk.serving import releases
from duet_sdk.tune.measure import MeasureConfig
from duet_sdk.tune.objective import Objective
from duet_sdk.tune.release import publish_tuned
from duet_sdk.tune.report import summarize, to_markdown
from duet_sdk.tune.search import Request, TuneError, run_search
from duet_sdk.tune.settings import ModelSettings, SearchSpace

log = logging.getLogger("duet_sdk.tune")


def _ints(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(",") if x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    return parse


def _sizes(text: str) -> tuple[int, ...]:
    return () if text == "none" else _ints("--preferred-batch-sizes")(text)


def parser() -> argparse.ArgumentParser:
    p = command_parser("duet-tune", __doc__.splitlines()[0])
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--release", type=int, help="release to tune (default: the current one)")
    p.add_argument("--export", type=Path, help="its duet-export output (default: the one it was published from)")
    p.add_argument("--objective", choices=("throughput", "latency"), required=True)
    p.add_argument("--slo-p99-ms", type=float, help="throughput: p99 latency bound")
    p.add_argument("--concurrency", type=int, help="throughput: requests in flight")
    p.add_argument("--rate", type=float, help="latency: requests per second")
    p.add_argument("--pipelines", default=",".join(api.ENSEMBLES), help="ensembles, tuned in this order")
    p.add_argument("--users", type=int, default=1, help="users per request")
    p.add_argument("--candidates", type=int, default=16, help="candidates per user")
    p.add_argument("--budget-s", type=float, default=600.0, help="no measurement starts after this")
    space = SearchSpace()
    p.add_argument("--queue-delays-us", type=_ints("--queue-delays-us"), default=space.max_queue_delay_us)
    p.add_argument("--preferred-batch-sizes", type=_sizes, nargs="+", default=list(space.preferred_batch_sizes),
                   help="each 'none' or comma-separated sizes")
    p.add_argument("--instances", type=_ints("--instances"), default=space.instances)
    p.add_argument("--threads", type=_ints("--threads"), default=space.threads, help="ONNX Runtime intra-op")
    p.add_argument("--inter-op-threads", type=_ints("--inter-op-threads"), default=space.inter_op_threads)
    measure = MeasureConfig()
    p.add_argument("--warmup-s", type=float, default=measure.warmup_s)
    p.add_argument("--window-s", type=float, default=measure.window_s)
    p.add_argument("--max-windows", type=int, default=measure.max_windows)
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="tune.json and tune.md go here")
    p.add_argument("--no-publish", action="store_true", help="report only")
    p.add_argument("--no-activate", action="store_true", help="publish without making the release the target")
    return p


def chosen_settings(summary: dict, pipelines: list[str]) -> dict:
    """model -> settings of the chosen points (TuneError if two pipelines chose differently for one model)."""
    chosen: dict = {}
    for pipeline in pipelines:
        info = summary["pipelines"][pipeline]
        for model, raw in info["points"][info["chosen"]]["settings"].items():
            settings = ModelSettings(**raw | {"preferred_batch_sizes": tuple(raw["preferred_batch_sizes"])})
            if chosen.setdefault(model, settings) != settings:
                raise TuneError(f"{model}: pipelines chose different settings ({chosen[model]} vs {settings})")
    return chosen


def run(args: argparse.Namespace) -> int:
    objective = Objective(args.objective, args.concurrency, args.slo_p99_ms, args.rate)
    pipelines = [x for x in args.pipelines.split(",") if x]
    if not pipelines or any(x not in api.ENSEMBLES for x in pipelines):
        raise ConfigError("--pipelines", f"names from {api.ENSEMBLES}", args.pipelines)
    if not 0 < args.budget_s < float("inf"):
        raise ConfigError("--budget-s", "seconds > 0", args.budget_s)
    space = SearchSpace(args.queue_delays_us, tuple(args.preferred_batch_sizes), args.instances, args.threads,
                        args.inter_op_threads)
    measure = MeasureConfig(warmup_s=args.warmup_s, window_s=args.window_s, max_windows=args.max_windows)
    index = releases.read_index(args.model_repository)
    version = args.release if args.release is not None else index["current"]
    if version is None:
        raise ConfigError(
            "--model-repository", "a published repository with a current release", str(args.model_repository)
        )
    points = run_search(
        args.model_repository,
        version,
        objective,
        space,
        measure,
        Request(args.users, args.candidates),
        pipelines,
        args.budget_s,
    )
    summary = summarize(points, objective, pipelines) | {"release": version, "published": None}
    missing = [x for x in pipelines if summary["pipelines"][x]["chosen"] is None]
    if not missing and not args.no_publish:
        published = publish_tuned(
            args.model_repository,
            version,
            chosen_settings(summary, pipelines),
            args.export,
            activate=not args.no_activate,
        )
        summary["published"] = published.version
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (args.out / "tune.md").write_text(to_markdown(summary), encoding="utf-8")
    print(to_markdown(summary))
    if missing:
        print(
            f"duet-tune: no measured config of {', '.join(missing)} met the objective ({objective.describe()}); "
            "nothing published",
            file=sys.stderr,
        )
        return 3
    print(
        f"duet-tune: {len(points)} configs measured; report in {args.out}; "
        + (f"published release {summary['published']}" if summary["published"] else "nothing published")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args, logging.INFO)
    return report_errors("duet-tune", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
