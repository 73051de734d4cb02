#!/usr/bin/env python
"""Train the held-out judge: a multinomial logistic regression on the real 8x8 digits.

Steering experiments optimise the embedded CNN reward (``data/default_reward``); this classifier is
of another family (linear in the pixels, trained without noise augmentation, by scikit-learn's
deterministic L-BFGS) and is never seen by the steering, so its P(digit = target) on the returned
samples measures whether a method produced the digit or merely fooled the CNN (reward hacking).

Data: scikit-learn's digits scaled to [-1, 1] (ink = +1), stratified 80/20 split
(``train_test_split(random_state=seed)``); the test accuracy is recorded in provenance.json.
Writes python/glass_core/data/heldout_classifier/{config.json, model.safetensors
(``weight`` [10, 64], ``bias`` [10], float32), provenance.json}.

    python scripts/train_heldout_classifier.py        # about 10 s on 1 CPU core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA_DIR, load_digits_tensor, seed_everything, write_provenance
from safetensors.torch import save_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    p.add_argument(
        "--C", type=float, default=1.0, help="inverse L2 strength (default: %(default)s)"
    )
    p.add_argument("--max-iter", type=int, default=2000, help="L-BFGS iterations")
    p.add_argument(
        "--out",
        type=Path,
        default=DATA_DIR / "heldout_classifier",
        help="output dir (default: %(default)s)",
    )
    return p.parse_args(argv)


def train(seed: int, c: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(weight [10, 64], bias [10], metrics) of the fitted logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits_tensor()
    xf, yf = x.reshape(len(x), -1).double().numpy(), y.numpy()
    x_tr, x_te, y_tr, y_te = train_test_split(xf, yf, test_size=0.2, stratify=yf, random_state=seed)
    clf = LogisticRegression(C=c, max_iter=max_iter, tol=1e-8).fit(x_tr, y_tr)
    metrics = {
        "test_accuracy": float(clf.score(x_te, y_te)),
        "train_accuracy": float(clf.score(x_tr, y_tr)),
        "test_mean_p_true": float(clf.predict_proba(x_te)[np.arange(len(y_te)), y_te].mean()),
        "num_train": len(y_tr),
        "num_test": len(y_te),
        "iterations": int(np.max(clf.n_iter_)),
    }
    w = np.ascontiguousarray(clf.coef_, dtype=np.float32)
    return w, np.ascontiguousarray(clf.intercept_, dtype=np.float32), metrics


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed, 1)
    weight, bias, metrics = train(args.seed, args.C, args.max_iter)
    wall = time.perf_counter() - start
    print(f"test accuracy {metrics['test_accuracy']:.4f}; wall time {wall:.1f} s")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)},
        str(out / "model.safetensors"),
    )
    config = {
        "architecture": "multinomial logistic regression: softmax(weight @ z.flatten() + bias)",
        "num_classes": 10,
        "input": "[B, 1, 8, 8] float in [-1, 1], ink = +1 (sklearn digits / 16 * 2 - 1)",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_provenance(
        out,
        script="scripts/train_heldout_classifier.py",
        seed=args.seed,
        args=vars(args),
        dataset="sklearn load_digits (1797 images, 8x8, 10 classes); stratified 80/20 split",
        metrics=metrics,
        wall_time_seconds=round(wall, 2),
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
