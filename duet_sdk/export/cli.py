"""``duet-export --spec export/<name>.toml --out runs/export/``: flags override the spec; ``duet-publish``
turns the output into a Triton model repository.

Exit status: 0 on success; 2 on a DuetError (config, checkpoint, gate, verification, missing extra).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from duet_sdk.cli_common import command_parser, configure_logging
from duet_sdk.errors import DuetError
from duet_sdk.export.pipeline import export_all, log_progress, quiet_progress
from duet_sdk.export.signature import PRECISIONS
from duet_sdk.export.spec import FORMATS, ExportSpec


def _parser() -> argparse.ArgumentParser:
    p = command_parser("duet-export", __doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, required=True, help="export spec TOML, e.g. export/cpu.toml")
    p.add_argument("--out", type=Path, required=True, help="output directory (artifacts/ and manifest.json)")
    p.add_argument("--checkpoints", type=Path, help="duet-train output directory (overrides the spec)")
    p.add_argument("--formats", help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--encoders", help="comma-separated encoders (click,conv); empty for none")
    p.add_argument("--ranker", help="ranker variant, e.g. duet; empty for none")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="cpu: fp32 or int8 (ONNX artifacts, dynamic quantization); gpu: TensorRT fp32, fp16 or bf16")
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                   help="export this checkpoint for MODEL (click, conv or ranker) instead of the latest accepted")
    p.add_argument(
        "--force", action="store_true", help="export checkpoints the gate did not accept (recorded as a warning)"
    )
    p.add_argument("--no-progress", action="store_true", help="print nothing but errors")
    return p


def _split(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v for v in value.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args, logging.ERROR if args.no_progress else logging.INFO)
    try:
        explicit = {}
        for item in args.checkpoint:
            model, sep, path = item.partition("=")
            if not sep:
                raise DuetError(f"--checkpoint {item!r}: expected MODEL=PATH")
            explicit[model] = Path(path)
        spec = ExportSpec.from_toml(args.spec).with_overrides(
            checkpoints=args.checkpoints,
            formats=_split(args.formats),
            encoders=_split(args.encoders),
            ranker=args.ranker,
            precision=args.precision,
        )
        export_all(spec, args.out, args.force, explicit, quiet_progress if args.no_progress else log_progress)
    except DuetError as exc:
        print(f"duet-export: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
