"""The main job on the embedded default: train both encoders, their SIDE codecs and the DUET ranker
behind the gate, export the serving modules to TorchScript and ONNX with verified parity, publish them
as a Triton model repository, serve it on a real tritonserver, call all three ensembles and compare
with in-process PyTorch, run event-triggered inference into a real Redis, print scores, stop.

Run as ``python -m duet_sdk.demo`` (``make demo``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.cli_common import command_parser, configure_logging
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.demo_serving import serve_and_check
from duet_sdk.export.pipeline import export_all, log_progress
from duet_sdk.export.spec import ExportSpec
from duet_sdk.side import SideConfig
from duet_sdk.training.datasets import synthetic_data
from duet_sdk.training.features import prepare_upstream, row_features
from duet_sdk.training.presets import DEFAULT_EPOCHS
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.trainer import TrainConfig
from duet_sdk.training.upstream import train_upstream

log = logging.getLogger(__name__)
ENCODERS = {"click": "ClickAUN -> ClickAUE", "conv": "ConvAUN -> ConvAUE"}


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m duet_sdk.demo", __doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="training output (checkpoints, registries)")
    parser.add_argument("--export", type=Path, default=None, help="export output (default: <out>/export)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    parser.add_argument("--spec", type=Path, default=Path("export/cpu.toml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_logging(args, logging.INFO)  # progress, and the serving checks of demo_serving
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    data = synthetic_data(SyntheticConfig(seed=args.seed))
    ds = data.dataset
    log.info("%s", data.report)
    rows, encoders = [], {}
    for kind, label in ENCODERS.items():
        log.info("training %s ...", label)
        encoders[kind] = train_upstream(
            kind, data, args.out, "demo", TrainConfig(epochs=DEFAULT_EPOCHS[kind], seed=args.seed)
        )
        rows.append((label, encoders[kind]))
    encoder_seconds = time.perf_counter() - start
    log.info("training SIDE codecs and the DUET ranker ...")
    train_rows, val_rows = ds.ranker_train, ds.ranker_val
    side = SideConfig(seed=args.seed)
    upstream = {
        k: prepare_upstream(k, o.checkpoint, ds.table, train_rows, val_rows, args.out, side)
        for k, o in encoders.items()
    }
    features = (row_features(upstream, ds.table, train_rows), row_features(upstream, ds.table, val_rows))
    ranker = train_ranker(
        "duet",
        ds.table,
        train_rows,
        val_rows,
        features,
        upstream,
        args.out,
        data.description,
        TrainConfig(epochs=DEFAULT_EPOCHS["ranker"], seed=args.seed),
    )
    rows.append(("DUET ranker (SIDE codes)", ranker))
    log.info("exporting (%s) ...", args.spec)
    spec = ExportSpec.from_toml(args.spec).with_overrides(checkpoints=args.out)
    export_dir = args.export or args.out / "export"
    manifest = export_all(spec, export_dir, progress=log_progress)

    print(f"\n{'model':<26} {'primary task':<24} {'val NE':>7} {'train s':>8}  gate")
    for label, outcome in rows:
        ckpt, decision = outcome.checkpoint, outcome.decision
        verdict = "accepted" if decision.accepted else f"REJECTED: {decision.reason}"
        print(f"{label:<26} {ckpt.primary_task:<24} {ckpt.primary_ne:>7.4f} {outcome.result.seconds:>8.1f}  {verdict}")
    for name, upstream_features in upstream.items():
        m = upstream_features.codec_checkpoint.metrics
        print(
            f"SIDE {name}: {m['compression_ratio_vs_fp16']:.0f}x vs FP16, relative MSE {m['relative_mse']:.5f}, mean "
            f"cosine {m['mean_cosine']:.5f}"
        )
    print(f"\n{'artifact':<36} {'max abs diff':>13} {'tolerance':>10}")
    for artifact in manifest["artifacts"]:
        print(
            f"{artifact['model'] + ' ' + artifact['format']:<36} {artifact['max_abs_diff']:>13.2e} "
            f"{artifact['tolerance']!s:>10}"
        )
    print(f"\nmanifest: {export_dir / 'manifest.json'}")
    accepted = all(outcome.decision.accepted for _, outcome in rows)
    served = serve_and_check(args.out, export_dir, args.repository, ds)  # the gate's accepted checkpoints
    print(f"\nencoders trained in {encoder_seconds:.1f}s; demo wall time {time.perf_counter() - start:.1f}s")
    return 1 if not served else 0 if accepted else 3


if __name__ == "__main__":
    raise SystemExit(main())
