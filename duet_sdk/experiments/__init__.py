"""Experiments that reproduce the DUET paper's analyses on our data (the [train] extra)."""

from duet_sdk._extras import require_modules

require_modules("duet_sdk.experiments", "torch", "safetensors", "sklearn", "matplotlib", "tqdm", "pyarrow")
