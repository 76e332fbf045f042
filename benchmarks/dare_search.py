"""Search-stage time per request of the ranker's target attention at L = 1000, by attention width.

One request = one user's history of L events and N candidates. The search stage is what DARE's
``d_att`` shrinks: embed the history and the candidates in the attention space (multi-hash lookup),
score every (candidate, behaviour) pair by scaled dot product, mask, keep the top k. It is timed three
ways: ``search`` (from raw IDs, the lookup included), ``score+topk`` (on already-embedded history, as
when a user's attention embeddings are cached) and ``score`` (the dot products alone, the part whose
cost is O(N L d_att)). All widths run interleaved in one process, round
after round, so they share the machine's state; the figure per width is the median over rounds, and
the ratios are against ``d_att = d_repr``.

    PYTHONPATH=. python benchmarks/dare_search.py --threads 1 --d-repr 32 128 --history-len 1000 --candidates 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from duet_sdk.models.config import TargetAttentionConfig
from duet_sdk.models.target_attention import TargetAttention


def _time(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--history-len", type=int, default=1000)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--d-repr", type=int, nargs="+", default=[32, 128])
    p.add_argument("--divisors", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeats", type=int, default=20, help="requests per timing within a round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    history = torch.randint(-(2**62), 2**62, (1, args.history_len, 2), generator=g).to(device)
    length = torch.tensor([args.history_len], device=device)
    targets = torch.randint(-(2**62), 2**62, (1, args.candidates, 2), generator=g).to(device)

    cases = {}
    for d_repr in args.d_repr:
        for divisor in args.divisors:
            cfg = TargetAttentionConfig(
                variant="dare", max_len=args.history_len, top_k=args.top_k, d_repr=d_repr, d_att=d_repr // divisor
            )
            module = TargetAttention(cfg).to(device).eval()
            with torch.no_grad():
                embedded = module.embed_attention(history)
                valid = module.valid_mask(history, length)

            def search(m=module):
                m.search(m.embed_attention(history), m.valid_mask(history, length), m.embed_attention(targets))
                sync()

            def score_topk(m=module, e=embedded, v=valid):
                m.search(e, v, m.embed_attention(targets))
                sync()

            def score(m=module, e=embedded, v=valid):
                m.scores(e, v, m.embed_attention(targets))
                sync()

            cases[(d_repr, d_repr // divisor)] = {"search": search, "score+topk": score_topk, "score": score}

    timings = {key: {stage: [] for stage in stages} for key, stages in cases.items()}
    with torch.no_grad():
        for fns in cases.values():  # warm-up
            for fn in fns.values():
                _time(fn, 3)
        for _ in range(args.rounds):
            for key, fns in cases.items():
                for stage, fn in fns.items():
                    timings[key][stage].append(_time(fn, args.repeats))

    rows = []
    print(
        f"L = {args.history_len}, N = {args.candidates} candidates, k = {args.top_k}, threads = {args.threads}, "
        f"device = {device}; "
        f"median over {args.rounds} rounds of {args.repeats} requests"
    )
    print(
        f"{'d_repr':>6} {'d_att':>5} {'search ms':>10} {'speed-up':>8} {'score+topk ms':>14} {'speed-up':>8} "
        f"{'score ms':>9} {'speed-up':>8}"
    )
    for (d_repr, d_att), stages in timings.items():
        med = {stage: statistics.median(values) * 1e3 for stage, values in stages.items()}
        full = {stage: statistics.median(values) * 1e3 for stage, values in timings[(d_repr, d_repr)].items()}
        row = {
            "d_repr": d_repr,
            "d_att": d_att,
            **{f"{s}_ms": round(m, 4) for s, m in med.items()},
            **{f"{s}_speedup": round(full[s] / m, 3) for s, m in med.items()},
        }
        rows.append(row)
        print(
            f"{d_repr:>6} {d_att:>5} {med['search']:>10.3f} {row['search_speedup']:>7.2f}x {med['score+topk']:>14.3f} "
            f"{row['score+topk_speedup']:>7.2f}x {med['score']:>9.3f} {row['score_speedup']:>7.2f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
