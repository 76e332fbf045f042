"""ClickAUN (or ConvAUN) recipe/data variants on MovieLens-100K, global split, one seed per process.

Usage: PYTHONPATH=. python docs/experiments/click_variants.py KIND SEED OUT \
    '{"name": {"train": {...}, "options": {...}}}'
``train`` overrides ``TrainConfig`` fields, ``options`` ``EventLogOptions`` fields (the data reloads
only when they change). Prints the primary val NE (all validation rows), best step / steps and the curve.
"""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from duet_sdk.data.eventlog import EventLogOptions
from duet_sdk.gate import GatePolicy
from duet_sdk.training.datasets import event_log_data
from duet_sdk.training.trainer import TrainConfig
from duet_sdk.training.upstream import train_upstream

torch.set_num_threads(1)
kind, seed, out, variants = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
primary = "ctr" if kind == "click" else "attributed_conversion"
loaded = {}
for name, v in variants.items():
    opts = json.dumps(v.get("options", {}), sort_keys=True)
    if opts not in loaded:
        options = EventLogOptions(seed=seed, split="global", negatives_per_positive=2, **v.get("options", {}))
        loaded[opts] = event_log_data("data_cache/ml-100k.inter", "movielens", options)
    data = loaded[opts]
    c = dataclasses.replace(TrainConfig(progress=False, seed=seed, eval_rows=5000), **v.get("train", {}))
    t = time.perf_counter()
    r = train_upstream(kind, data, out / name, "demo", c, GatePolicy(max_primary_ne=None)).result
    print(name, len(data.dataset.click_train if kind == "click" else data.dataset.conv_train),
          round(r.val_ne[primary], 4), {k: round(x, 4) for k, x in r.val_ne.items() if x == x},
          f"{r.best_step}/{r.steps}", [(h["step"], round(h[f"val_ne/{primary}"], 4)) for h in r.history],
          f"{time.perf_counter() - t:.0f}s", flush=True)
