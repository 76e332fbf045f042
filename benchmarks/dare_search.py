"""Search-stage time per request of the ranker's target attention at L = 1000, by attention width.

One request = one user's history of L events and N candidates. The search stage is what DARE's
``d_att`` shrinks: embed the history and the candidates in the attention space (multi-hash lookup),
score every (candidate, behaviour) pair by scaled dot product, mask, keep the top k. It is timed as:

- ``search``: from raw IDs, the history's and the candidates' multi-hash lookups included;
- ``score+topk``: on the already-embedded history (a user's attention embeddings cached);
- ``score``: the candidates' lookup, the dot products, scale and mask, without the top-k;
- ``dots``: the (N, d_att) x (d_att, L) product alone on embedded inputs: what the paper's
  "search complexity O(L N d_att)" counts (DARE Sec. 4.5 normalises that complexity, it does not time a
  top-k), with its GFLOP/s and % of the machine's fp32 GEMM peak (measured in the same run);
- ``topk`` / ``topk unsorted``: ``torch.topk`` alone on the (N, k + L) masked scores, ``sorted=True``
  (what the module runs) and ``sorted=False`` (checked to select the same behaviours): a cost that does
  not depend on ``d_att``;
- ``search ort``: the same search from raw IDs, exported by the dynamo ONNX exporter (as the ranker artifact is) and
  run by ONNX Runtime with the threads given, as the served ranker runs it (checked to select the same
  behaviours as PyTorch); ``--no-ort`` leaves it out, ``--ort-profile`` adds ORT's kernel time per
  operator type of each width's search (``benchmarks.precision.op_times``).

All widths run interleaved in one process, round after round, so they share the machine's state; the
figure per width is the median over rounds, and the ratios are against ``d_att = d_repr``.

    PYTHONPATH=. python benchmarks/dare_search.py --threads 1 --d-repr 32 128 --history-len 1000 --candidates 100
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import gemm_peak
from benchmarks.precision import op_times
from duet_sdk.models.config import TargetAttentionConfig
from duet_sdk.models.target_attention import TargetAttention


class SearchStage(torch.nn.Module):
    """The search stage alone, from raw IDs: (1, L, 2), (1,), (1, N, 2) int64 -> top-k scores, index (1, N, k)."""

    def __init__(self, attention: TargetAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, history: torch.Tensor, length: torch.Tensor, targets: torch.Tensor):
        a = self.attention
        top, index, _ = a.search(a.embed_attention(history), a.valid_mask(history, length), a.embed_attention(targets))
        return top, index


class OrtSearch:
    """The exported search stage in an ONNX Runtime session; calling it runs one request."""

    def __init__(self, path: Path, session, feeds: dict) -> None:
        self.path, self.session, self.feeds = path, session, feeds

    def __call__(self) -> None:
        self.session.run(None, self.feeds)


def ort_search(module: TargetAttention, inputs: tuple[torch.Tensor, ...], folder: Path, threads: int) -> OrtSearch:
    """Export the search stage to ``folder`` as ONNX and open it in ONNX Runtime.

    Raises SystemExit when ORT selects other behaviours than PyTorch."""
    import onnxruntime as ort

    stage = SearchStage(module).eval()
    path = folder / f"search_{module.config.d_repr}_{module.config.attention_dim}.onnx"
    with torch.no_grad(), warnings.catch_warnings(), redirect_stdout(StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(stage, inputs, dynamo=True, report=False, verbose=False).save(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    with torch.no_grad():
        want = np.sort(stage(*inputs)[1].numpy(), -1)
    if not np.array_equal(np.sort(session.run(None, feeds)[1], -1), want):
        raise SystemExit(f"ONNX Runtime's search at d_att={module.config.attention_dim} selected other behaviours")
    return OrtSearch(path, session, feeds)


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
    p.add_argument("--d-repr", type=int, nargs="+", default=[32, 128, 256])
    p.add_argument("--divisors", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeats", type=int, default=20, help="requests per timing within a round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-ort", action="store_true", help="leave out the ONNX Runtime search")
    p.add_argument(
        "--ort-profile", action="store_true", help="also print ONNX Runtime's per-operator times of each width's search"
    )
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    history = torch.randint(-(2**62), 2**62, (1, args.history_len, 2), generator=g).to(device)
    length = torch.tensor([args.history_len], device=device)
    targets = torch.randint(-(2**62), 2**62, (1, args.candidates, 2), generator=g).to(device)

    with_ort = device.type == "cpu" and not args.no_ort
    onnx_folder = Path(tempfile.mkdtemp(prefix="dare_search_"))
    peak_before = gemm_peak(args.threads) if device.type == "cpu" else None
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
                embedded_targets = module.embed_attention(targets)
                padded = torch.nn.functional.pad(
                    module.scores(embedded, valid, embedded_targets), (args.top_k, 0), value=-1e9
                )
                top_sorted = padded.topk(args.top_k, dim=-1).indices.sort(dim=-1).values
                top_unsorted = padded.topk(args.top_k, dim=-1, sorted=False).indices.sort(dim=-1).values
                if not torch.equal(top_sorted, top_unsorted):
                    raise SystemExit("topk(sorted=False) selected other behaviours than topk(sorted=True)")

            def search(m=module):
                m.search(m.embed_attention(history), m.valid_mask(history, length), m.embed_attention(targets))
                sync()

            def score_topk(m=module, e=embedded, v=valid):
                m.search(e, v, m.embed_attention(targets))
                sync()

            def score(m=module, e=embedded, v=valid):
                m.scores(e, v, m.embed_attention(targets))
                sync()

            def dots(e=embedded, t=embedded_targets):
                torch.matmul(t, e.transpose(1, 2))
                sync()

            def topk(x=padded):
                x.topk(args.top_k, dim=-1)
                sync()

            def topk_unsorted(x=padded):
                x.topk(args.top_k, dim=-1, sorted=False)
                sync()

            cases[(d_repr, d_repr // divisor)] = {
                "search": search,
                "score+topk": score_topk,
                "score": score,
                "dots": dots,
                "topk": topk,
                "topk unsorted": topk_unsorted,
            }
            if with_ort:
                cases[(d_repr, d_repr // divisor)]["search ort"] = ort_search(
                    module, (history, length, targets), onnx_folder, args.threads
                )

    timings = {key: {stage: [] for stage in stages} for key, stages in cases.items()}
    with torch.no_grad():
        for fns in cases.values():  # warm-up
            for fn in fns.values():
                _time(fn, 3)
        for _ in range(args.rounds):
            for key, fns in cases.items():
                for stage, fn in fns.items():
                    timings[key][stage].append(_time(fn, args.repeats))

    peak_after = gemm_peak(args.threads) if device.type == "cpu" else None
    peak = max(peak_before["gflops"], peak_after["gflops"]) if peak_before and peak_after else None
    print(
        f"L = {args.history_len}, N = {args.candidates} candidates, k = {args.top_k}, threads = {args.threads}, "
        f"device = {device}; median over {args.rounds} rounds of {args.repeats} requests; "
        + (f"fp32 GEMM peak {peak:.1f} GFLOP/s" if peak else "GEMM peak not measured")
    )
    stages = list(next(iter(cases.values())))
    header = " ".join(f"{s + ' ms':>17} {'x':>5}" for s in stages)
    print(f"{'d_repr':>6} {'d_att':>5} {header}  dots GFLOP/s  % peak")
    rows = []
    for (d_repr, d_att), per_stage in timings.items():
        med = {stage: statistics.median(values) * 1e3 for stage, values in per_stage.items()}
        full = {stage: statistics.median(values) * 1e3 for stage, values in timings[(d_repr, d_repr)].items()}
        gflops = 2 * args.candidates * args.history_len * d_att / (med["dots"] * 1e-3) / 1e9
        row = {
            "d_repr": d_repr,
            "d_att": d_att,
            **{f"{s}_ms": round(m, 4) for s, m in med.items()},
            **{f"{s}_speedup": round(full[s] / m, 3) for s, m in med.items()},
            "dots_gflops": round(gflops, 2),
            "dots_pct_peak": round(100 * gflops / peak, 2) if peak else None,
            "topk_share_of_search": round(med["topk"] / med["search"], 3),
        }
        rows.append(row)
        print(
            f"{d_repr:>6} {d_att:>5} "
            + " ".join(f"{med[s]:>17.3f} {full[s] / med[s]:>4.2f}x" for s in stages)
            + f"  {gflops:>12.2f}  {row['dots_pct_peak'] if peak else float('nan'):>6.2f}"
        )
    profiles = {}
    if with_ort and args.ort_profile:
        for (d_repr, d_att), fns in cases.items():
            search = fns["search ort"]
            inputs = {name: torch.from_numpy(value) for name, value in search.feeds.items()}
            ops = op_times(search.path, inputs, args.threads, calls=200)  # us per run by operator type
            whole = sum(ops.values())
            profiles[f"{d_repr}/{d_att}"] = {op: round(us, 1) for op, us in ops.items()}
            top = ", ".join(f"{op} {us:.0f} us ({100 * us / whole:.0f} %)" for op, us in list(ops.items())[:5])
            print(f"ORT search d_repr {d_repr} d_att {d_att}: kernels {whole:.0f} us per run; {top}")
    shutil.rmtree(onnx_folder, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            peaks = {"before": peak_before, "after": peak_after}
            json.dump({"args": vars(args), "gemm_peak": peaks, "rows": rows, "ort_profiles": profiles}, f, indent=2)


if __name__ == "__main__":
    main()
