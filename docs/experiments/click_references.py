"""Simple references for ClickAUN's ``ctr`` task on exactly the rows it trains and validates on.

Usage: PYTHONPATH=. python docs/experiments/click_references.py data_cache/ml-100k.inter SEED NEG [OPTIONS_JSON]
(OPTIONS_JSON: extra ``EventLogOptions`` fields, e.g. '{"session_gap": 86400}').

Prints val NE of: the train base rate; logistic regressions on log popularity, on a smoothed item
target encoding of ``ctr`` (from training rows), and on item-item co-rating similarity between the
candidate and the user's last 50 click events before the row's request (cosine over the events
before each user's training request: no training label enters it). Regressions are fit on the
training rows (negatives downsampled at w) and recalibrated as the trainer does.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from duet_sdk.data.eventlog import EventLogOptions
from duet_sdk.data.routing import recalibrate
from duet_sdk.metrics import normalized_entropy
from duet_sdk.training.datasets import event_log_data


def history_items(table, rows, max_len=50):
    """List of (item id arrays) per row: the last ``max_len`` click events before the request."""
    ev = table.streams["click"]
    end = table.history_end("click", rows.user_index, rows.request_time)
    start = np.maximum(ev.offsets[rows.user_index], end - max_len)
    return [ev.ids[s:e, 0] for s, e in zip(start, end)]


def main(path: str, seed: int, neg: int, extra: dict) -> None:
    options = EventLogOptions(seed=seed, split="global", negatives_per_positive=neg, **extra)
    data = event_log_data(path, "movielens", options).dataset
    tr, va, table = data.click_train, data.click_val, data.table
    w = tr.downsample_rate
    ytr, yva = tr.labels[:, 0], va.labels[:, 0]
    n_users = len(np.unique(tr.user_index))
    print(f"train users {n_users}; rows train {len(tr)} (w={w}) val {len(va)}")
    print(f"ctr rate train {ytr.mean():.4f} val {yva.mean():.4f}")
    base = recalibrate(np.full(len(va), ytr.mean()), w)
    print(f"base rate           NE {normalized_entropy(yva, base):.4f}")
    items = np.unique(table.streams["click"].ids[:, 0])
    code = {v: i for i, v in enumerate(items)}
    ctr_item = np.array([code.get(v, -1) for v in tr.item_sparse[:, 0]])
    cva_item = np.array([code.get(v, -1) for v in va.item_sparse[:, 0]])

    def fit(name, xtr, xva):
        m = LogisticRegression(C=1.0, max_iter=1000).fit(xtr, ytr)
        p = recalibrate(m.predict_proba(xva)[:, 1], w)
        auc = roc_auc_score(ytr, m.decision_function(xtr)), roc_auc_score(yva, p)
        print(f"{name:20s}NE {normalized_entropy(yva, p):.4f}  AUC train {auc[0]:.3f} val {auc[1]:.3f}")
        return p

    pop_tr, pop_va = tr.item_dense[:, :1], va.item_dense[:, :1]
    fit("log popularity", pop_tr, pop_va)
    # target encoding of ctr per item, smoothed toward the (downsampled) train rate
    n = np.bincount(ctr_item, minlength=len(items)).astype(float)
    k = np.bincount(ctr_item, weights=ytr, minlength=len(items))
    prior, a = ytr.mean(), 20.0
    te = (k + a * prior) / (n + a)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    # out-of-fold on train (leave-one-out) so the regression does not fit its own labels
    te_tr = (k[ctr_item] - ytr + a * prior) / (n[ctr_item] - 1 + a)
    te_va = np.where(cva_item >= 0, te[np.maximum(cva_item, 0)], prior)
    fit("item TE (ctr)", logit(te_tr)[:, None], logit(te_va)[:, None])
    fit("item TE + pop", np.column_stack([logit(te_tr), pop_tr]), np.column_stack([logit(te_va), pop_va]))
    # co-rating cosine from events before each user's *training* request (history windows only)
    ev = table.streams["click"]
    users = np.repeat(np.arange(table.num_users), np.diff(ev.offsets))
    req = np.full(table.num_users, -1, dtype=np.int64)
    req[tr.user_index] = tr.request_time
    keep = ev.timestamps < req[users]
    ic = np.array([code[v] for v in ev.ids[keep, 0]])
    m = sp.csr_matrix((np.ones(len(ic)), (users[keep], ic)), shape=(table.num_users, len(items)))
    m.data[:] = 1.0
    norm = np.sqrt(np.asarray(m.sum(0)).ravel()) + 1e-9
    sim = (m.T @ m).toarray() / norm[:, None] / norm[None, :]
    np.fill_diagonal(sim, 0.0)
    pop = np.asarray(m.sum(0)).ravel()
    lift = np.log1p((m.T @ m).toarray() / (pop[None, :] + 1e-9) / ((pop[:, None] + 1.0) / table.num_users))

    def cooc(rows, cand):
        hist = history_items(table, rows)
        out = np.zeros((len(cand), 4))
        for r, (h, c) in enumerate(zip(hist, cand)):
            if c < 0 or not len(h):
                continue
            s = sim[c, [code[v] for v in h]]
            out[r] = [s.mean(), s.max(), np.sort(s)[-10:].mean(), lift[c, [code[v] for v in h]].mean()]
        return out

    co_tr, co_va = cooc(tr, ctr_item), cooc(va, cva_item)
    fit("co-rating sim", co_tr, co_va)
    fit("co-rating + pop", np.column_stack([co_tr, pop_tr]), np.column_stack([co_va, pop_va]))
    fit("co-rating+pop+TE", np.column_stack([co_tr, pop_tr, logit(te_tr)]),
        np.column_stack([co_va, pop_va, logit(te_va)]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
