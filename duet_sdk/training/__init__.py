"""Training of the upstream encoders and the downstream ranker behind the checkpoint gate (the [train] extra)."""

from duet_sdk._extras import require_modules

require_modules("duet_sdk.training", "torch", "safetensors", "sklearn", "tqdm", "pyarrow")
