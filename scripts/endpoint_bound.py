#!/usr/bin/env python3
"""How much could any endpoint rule catch at 2 chars/s? (issue 16, docs/turn-engine.md)

It also prints, last, how the engine's position-free pause model compares with what a wait
after a burst's first, second, third and later bubble catches.

Not part of the build or the tests. Needs numpy and scikit-learn (pip install numpy
scikit-learn). Run from the repository root with ../shared beside it:

    python3 scripts/endpoint_bound.py [path/to/dataset.json]

It replays the Chit-Chat trace the way `hark sim --typing-cps 2` synthesises typing (each bubble
typed for len / 2 seconds just before it is sent) and labels every bubble of a person's turn:

- end:   the bubble ends its turn;
- catch: the person goes on, but starts typing more than LAG after the bubble and before the
         burst's hard cap (CAP from its first bubble): a pause a wait could still catch;
- quick / late: they start typing within LAG (the typing gate holds the reply anyway), or after
         the cap (no wait can catch it).

Classifiers are trained on the train split (conversation ids 0-b) and measured on the test split
(c-f) for "catch" against "end". A rule that keeps the median dead air near the floor may make at
most half of the finished turns wait, so the number that matters is the share of "catch" bubbles
ranked above the top half of the "end" bubbles (the ROC curve at a false positive rate of 0.5).
"""
import collections
import datetime
import json
import math
import sys

import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import cross_val_predict

CPS, LAG, CAP = 2.0, 1.4, 10.0
PATH = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/chitchat/dataset.json"


def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timestamp()


# Per bubble: (label, text, features). The features are what the engine knows when the bubble
# arrives, plus a few it does not use (marked *).
NAMES = ["index", "chars", "words", "question", "period", "bang", "since_first",
         "person_bubbles_per_turn", "person_pause_share", "relative_length",
         "*other_side_asked", "*reply_latency", "*other_side_chars", "*turn_number"]
rows = {"train": [], "test": []}
for cid, conv in json.load(open(PATH)).items():
    split = "test" if cid[0].lower() in "cdef" else "train"
    runs = [r for r in conv["messages"] if r]
    if len({m["sender"] for r in runs for m in r}) < 2:
        continue
    seen = collections.defaultdict(lambda: {"turns": 0, "bubbles": 0, "gaps": 0, "pauses": 0, "chars": 0})
    for i, run in enumerate(runs[1:], start=1):
        prev, h = runs[i - 1], seen[run[0]["sender"]]
        t0 = ts(run[0]["timestamp"])
        for k, m in enumerate(run):
            tk = ts(m["timestamp"])
            if k == len(run) - 1:
                label = "end"
            else:
                start = ts(run[k + 1]["timestamp"]) - tk - len(run[k + 1]["text"]) / CPS
                label = "quick" if start <= LAG else "catch" if tk - t0 + start < CAP else "late"
            text = m["text"].strip()
            mean_chars = h["chars"] / h["bubbles"] if h["bubbles"] else 0
            rows[split].append((label, text, [
                k, len(text), len(text.split()), text.endswith("?"), text.endswith("."),
                text.endswith("!"), tk - t0,
                h["bubbles"] / h["turns"] if h["turns"] else -1,
                h["pauses"] / h["gaps"] if h["gaps"] else -1,
                len(text) / mean_chars if mean_chars else -1,
                prev[-1]["text"].strip().endswith("?"), min(t0 - ts(prev[-1]["timestamp"]), 120),
                sum(len(x["text"]) for x in prev), i]))
        h["turns"] += 1
        h["bubbles"] += len(run)
        for k, m in enumerate(run):
            h["chars"] += len(m["text"])
            if k + 1 < len(run):
                h["gaps"] += 1
                start = ts(run[k + 1]["timestamp"]) - ts(m["timestamp"]) - len(run[k + 1]["text"]) / CPS
                h["pauses"] += start > 1.0

words = HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False)
chars = HashingVectorizer(n_features=2**18, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=False)


def data(split):
    rs = [r for r in rows[split] if r[0] in ("end", "catch")]
    texts = [r[1] for r in rs]
    return (np.array([r[0] == "catch" for r in rs]), np.array([r[2] for r in rs], dtype=float),
            sp.hstack([words.transform(texts), chars.transform(texts)]).tocsr())


y_tr, x_tr, t_tr = data("train")
y_te, x_te, t_te = data("test")
# The text score: out of fold on train, so that the next stage does not learn to trust it blindly.
text_tr = cross_val_predict(LogisticRegression(max_iter=2000), t_tr, y_tr, cv=4, method="predict_proba")[:, 1]
text_te = LogisticRegression(max_iter=2000).fit(t_tr, y_tr).predict_proba(t_te)[:, 1]
print(f"test: {len(y_te)} bubbles that end a turn or are followed by a catchable pause, {y_te.sum()} of them the latter")
first_te = x_te[:, 0] == 0
print(f"  {y_te[first_te].sum() / y_te.sum():.0%} of the catchable pauses follow a first bubble; "
      f"{(~y_te[first_te]).sum() / (~y_te).sum():.0%} of the turns end at their first bubble")


def report(name, cols, text=True, only_first=False):
    m_tr = x_tr[:, 0] == 0 if only_first else np.ones(len(y_tr), bool)
    m_te = first_te if only_first else np.ones(len(y_te), bool)
    a, b = x_tr[m_tr][:, cols], x_te[m_te][:, cols]
    if text:
        a, b = np.column_stack([a, text_tr[m_tr]]), np.column_stack([b, text_te[m_te]])
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)
    score = model.fit(a, y_tr[m_tr]).predict_proba(b)[:, 1] if cols else text_te[m_te]
    fpr, tpr, _ = roc_curve(y_te[m_te], score)
    caught = " ".join(f"{np.interp(f, fpr, tpr):.2f}" for f in (0.3, 0.4, 0.5))
    print(f"{name:58s} AUC {roc_auc_score(y_te[m_te], score):.3f}; caught with 30/40/50% of the ends waiting: {caught}")


engine = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
report("text alone", [], text=True)
report("index in the burst alone", [0], text=False)
report("the engine's signals (text, look, index, timing, rhythm)", engine)
report("the same, and the ones it does not use (*)", list(range(len(NAMES))))
report("first bubbles only: the engine's signals but index and timing", [1, 2, 3, 4, 5, 7, 8, 9], only_first=True)
report("first bubbles only: and the ones it does not use (*)", [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13], only_first=True)

# What a wait catches, by position: over typing at 2, 3, 5, 10 chars/s and time scales 0.5, 1, 2
# (the conditions the engine's priors were fitted on), the share of bubbles that go on and are
# followed by a pause the cap still covers, against what the engine's position-free pause model
# (TYPING_PRIOR in turn/endpoint/decide.rs, cut at the time left to the cap) predicts; relative to
# first bubbles. The engine's pause share scaled by these factors did not change its curve.
PI, MU, SD = 0.491, 8.99, 1.00  # TYPING_PRIOR
LAG_MS, CADENCE_MS, PAUSE_MS = LAG * 1000, 400, 1000


def survival(t_ms):
    return 0.5 * math.erfc((math.log(max(t_ms, 1)) - MU) / (SD * math.sqrt(2)))


def predicted(cap_left_s):
    return PI * (survival(LAG_MS) - survival(cap_left_s * 1000 + CADENCE_MS)) / survival(PAUSE_MS) if cap_left_s > LAG else 0.0


bursts = [[(ts(m["timestamp"]), len(m["text"])) for m in run]
          for cid, conv in json.load(open(PATH)).items() if cid[0].lower() not in "cdef"
          for run in conv["messages"] if run]
seen_vs_model = collections.defaultdict(lambda: [0.0, 0.0])
for cps in (2, 3, 5, 10):
    for scale in (0.5, 1, 2):
        for burst in bursts:
            t0 = burst[0][0] * scale
            for k in range(len(burst) - 1):
                tk = burst[k][0] * scale
                start = max(0.0, burst[k + 1][0] * scale - tk - burst[k + 1][1] / cps)
                cap_left = CAP - (tk - t0)
                if cap_left <= 0.8:
                    continue
                row = seen_vs_model[min(k, 3)]
                row[0] += LAG < start < cap_left + CADENCE_MS / 1000
                row[1] += predicted(cap_left)
first = seen_vs_model[0][0] / seen_vs_model[0][1]
print("catchable pauses seen against predicted, relative to first bubbles (index 0, 1, 2, 3+):",
      " / ".join(f"{seen / model / first:.2f}" for seen, model in (seen_vs_model[k] for k in range(4))))
