"""Score candidates for users from their stored SIDE codes (duet_downstream), falling back on a miss.

    python clients/score.py --triton 127.0.0.1:8001 --redis redis://127.0.0.1:6379/0 --users 200 --requests 10

Users and candidates come from the same synthetic population as loadgen.py (same ``--users``/``--seed``).
Prints, per request, which path served it (stored / fresh / default), the model version and the top
candidates by the first task, then how many requests each path served.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import (
    add_connection_flags,
    add_metrics_flag,
    add_population_flags,
    apply_credentials,
    population,
    report_errors,
    serve_metrics,
    stores,
)

from duet_sdk.client import DuetClient
from duet_sdk.online.replay import ranker_requests
from duet_sdk.online.scorer import Scorer
from duet_sdk.online.scorer_metrics import ScorerCollector


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_flags(p)
    add_population_flags(p)
    p.add_argument("--requests", type=int, default=10, help="users to score")
    p.add_argument("--candidates", type=int, default=16, help="candidates per user")
    p.add_argument("--fallback", choices=("fresh", "default"), default="fresh", help="on a store miss")
    p.add_argument("--top", type=int, default=3)
    add_metrics_flag(p)
    args = p.parse_args(argv)
    apply_credentials(args)
    return report_errors("score", run, args)


def run(args: argparse.Namespace) -> int:
    dataset = population(args)
    with DuetClient(args.triton, timeout_s=10.0) as client:
        interface = client.connect()
        history, store = stores(args, {s: info.max_len for s, info in interface.streams.items()})
        scorer = Scorer(client, store, history, fallback=args.fallback)
        serve_metrics(args.metrics_port, ScorerCollector(scorer))
        requests = [(h.user_id, c) for h, c in ranker_requests(dataset, args.requests, args.candidates)]
        task = interface.tasks[0]
        for result in scorer.score(requests):
            scores = np.array(result.scores)[:, 0]
            top = ", ".join(f"#{i} {scores[i]:.4f}" for i in np.argsort(-scores)[: args.top])
            print(f"user {result.user_id:>10}  {result.path:<7} v{result.model_version}  top {task}: {top}")
        print("paths: " + ", ".join(f"{k} {v}" for k, v in scorer.metrics.paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
