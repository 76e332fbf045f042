"""Ranker lr check on a finished table1 seed: same data, encoders and codecs; baseline and DUET at the given lr."""
import sys
from pathlib import Path

import torch

from duet_sdk.checkpoint import load_checkpoint
from duet_sdk.experiments.table1 import Table1Config, load_data
from duet_sdk.gate import GatePolicy
from duet_sdk.side import SideConfig
from duet_sdk.training.features import prepare_upstream, row_features
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.trainer import TrainConfig

torch.set_num_threads(1)
seed, lr, seed_dir, out = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
cfg = Table1Config(
    seeds=(seed,), events=Path("data_cache/ml-100k.inter"), event_format="movielens", negatives_per_positive=2
)
data = load_data(cfg, seed)
ds = data.dataset
enc = {}
for name in ("click", "conv"):
    path = sorted((seed_dir / name).iterdir())[-1]
    enc[name] = load_checkpoint(path)
up = {
    n: prepare_upstream(n, c, ds.table, ds.ranker_train, ds.ranker_val, seed_dir, SideConfig(seed=seed))
    for n, c in enc.items()
}
feats = (row_features(up, ds.table, ds.ranker_train), row_features(up, ds.table, ds.ranker_val))
c = TrainConfig(progress=False, seed=seed, lr=lr, eval_rows=5000)
for v in ("baseline", "duet"):
    r = train_ranker(
        v,
        ds.table,
        ds.ranker_train,
        ds.ranker_val,
        feats,
        up,
        out,
        data.description,
        c,
        GatePolicy(max_primary_ne=None),
    )
    print(seed, lr, v, round(r.result.val_ne["offsite_conversion"], 4), r.result.best_step, r.result.steps, flush=True)
