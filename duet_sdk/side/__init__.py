"""SIDE: semantic ID embedding, residual quantization of user embeddings (DUET §4.2-4.3, DESIGN §4)."""

from duet_sdk._extras import missing_extra

try:
    from duet_sdk.side.codec import SideCodec, bytes_per_user, compression_ratio_vs_fp16
    from duet_sdk.side.config import SideConfig
    from duet_sdk.side.modules import SideDecoder, SideEncoder
    from duet_sdk.side.storage import (
        find_codec_by_digest,
        find_codec_for_encoder,
        load_side_codec,
        save_side_codec,
    )
    from duet_sdk.side.train import train_side_codec
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

__all__ = [
    "SideCodec",
    "SideConfig",
    "SideDecoder",
    "SideEncoder",
    "bytes_per_user",
    "compression_ratio_vs_fp16",
    "find_codec_by_digest",
    "find_codec_for_encoder",
    "load_side_codec",
    "save_side_codec",
    "train_side_codec",
]
