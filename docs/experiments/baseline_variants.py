"""Baseline-ranker recipe variants on one loaded dataset (one process: the data loads once)."""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from duet_sdk.experiments.table1 import Table1Config, load_data
from duet_sdk.gate import GatePolicy
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.trainer import TrainConfig

torch.set_num_threads(1)
src, out = sys.argv[1], Path(sys.argv[2])
variants = json.loads(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
cfg = (
    Table1Config(seeds=(seed,), events=Path(src), event_format="movielens")
    if src != "longtail"
    else Table1Config(seeds=(seed,), dataset="longtail")
)
data = load_data(cfg, seed)
ds = data.dataset
print("rows", len(ds.ranker_train), len(ds.ranker_val), flush=True)
for name, kw in variants.items():
    kw = dict(kw)
    table_size = kw.pop("table_size", None)
    c = dataclasses.replace(TrainConfig(progress=False, seed=seed), **kw)
    t = time.perf_counter()
    r = train_ranker(
        "baseline",
        ds.table,
        ds.ranker_train,
        ds.ranker_val,
        ({}, {}),
        {},
        out / name,
        data.description,
        c,
        GatePolicy(max_primary_ne=None),
        table_size=table_size,
    )
    res = r.result
    print(
        name,
        round(res.val_ne["offsite_conversion"], 4),
        res.best_step,
        res.steps,
        [(h["step"], round(h["val_ne/offsite_conversion"], 4)) for h in res.history],
        f"{time.perf_counter() - t:.0f}s",
        flush=True,
    )
