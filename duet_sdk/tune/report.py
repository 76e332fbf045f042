"""``duet-tune``'s report: every measured point, the Pareto front and the choice per pipeline, as JSON
and markdown."""

from __future__ import annotations

from collections.abc import Sequence

from duet_sdk.tune.objective import Objective, pareto_front
from duet_sdk.tune.search import Point


def summarize(points: Sequence[Point], objective: Objective, pipelines: Sequence[str]) -> dict:
    """Per pipeline: all points, the Pareto front, the chosen point (None: no measured config was feasible)."""
    out = {"objective": objective.describe(), "pipelines": {}}
    for pipeline in pipelines:
        mine = [p for p in points if p.pipeline == pipeline]
        best = objective.best(mine)
        out["pipelines"][pipeline] = {
            "points": [p.to_dict() for p in mine],
            "pareto": [mine.index(p) for p in pareto_front(mine)],
            "chosen": None if best is None else mine.index(best),
            "baseline": 0 if mine else None,
        }
    return out


def to_markdown(summary: dict) -> str:
    lines = [f"# duet-tune\n\nobjective: {summary['objective']}\n"]
    for pipeline, info in summary["pipelines"].items():
        lines += [
            f"## {pipeline}\n",
            "| # | settings | req/s | p50 ms | p90 ms | p99 ms | stable | errors | front | chosen |",
            "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |",
        ]
        for i, point in enumerate(info["points"]):
            m = point["measurement"]
            settings = "; ".join(f"{model}: {_describe(s)}" for model, s in point["settings"].items())
            lines.append(
                f"| {i} | {settings} | {m['rps']:.1f} | {m['p50_ms']:.2f} | {m['p90_ms']:.2f} | {m['p99_ms']:.2f} | "
                f"{'yes' if m['stable'] else 'no'} | {m['errors']} | {'*' if i in info['pareto'] else ''} | "
                f"{'**chosen**' if i == info['chosen'] else ''} |"
            )
        if info["chosen"] is None:
            lines.append("\nno measured config met the objective")
        lines.append("")
    return "\n".join(lines)


def _describe(s: dict) -> str:
    preferred = ",".join(map(str, s["preferred_batch_sizes"])) or "none"
    return (
        f"delay {s['max_queue_delay_us']}us, pref {preferred}, {s['instances']} inst, "
        f"{s['threads']}x{s['inter_op_threads']} thr"
    )
