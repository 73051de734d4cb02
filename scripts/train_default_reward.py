#!/usr/bin/env python
"""Train the embedded reward: a small digit classifier, r(z) = log p(class = target | z).

Data: scikit-learn's 8x8 digits (ships inside the package, no download), scaled to [-1, 1],
split 80/20 (stratified, seeded) into train/test. Augmentation: additive Gaussian noise with a
random std in [0, --noise-max] and random 1-pixel shifts, so the reward stays sensible on the
slightly noisy / blurry denoised estimates E[z | x_t] that FK steering scores. Label smoothing keeps
log-probabilities in a bounded, well-conditioned range (about [-6, 0]) for use as a reward.

Deterministic given --seed (torch deterministic algorithms, fixed thread count).
Writes python/glass_core/data/default_reward/{config.json, model.safetensors,
class_means.safetensors (per-class mean images, for the closed-form template reward),
provenance.json}.

    python scripts/train_default_reward.py            # about 20 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import DATA_DIR, load_default_module, load_digits_tensor, seed_everything
from _common import write_provenance as _write_provenance
from safetensors.torch import save_file
from torch.nn import functional as F


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: %(default)s)")
    p.add_argument(
        "--lr", type=float, default=2e-3, help="AdamW learning rate (default: %(default)s)"
    )
    p.add_argument("--width", type=int, default=32, help="conv width (default: %(default)s)")
    p.add_argument(
        "--label-smoothing", type=float, default=0.1, help="label smoothing (default: %(default)s)"
    )
    p.add_argument(
        "--noise-max",
        type=float,
        default=0.3,
        help="max augmentation noise std (default: %(default)s)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=DATA_DIR / "default_reward",
        help="output dir (default: %(default)s)",
    )
    return p.parse_args(argv)


def augment(x: torch.Tensor, noise_max: float, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    # random 1-pixel shifts (pad with background -1, crop back to 8x8)
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (b,), generator=gen)
    dy = torch.randint(0, 3, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(8)[None, :])[:, None, :, None].expand(b, 1, 8, 10)
    shifted = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(8)[None, :])[:, None, None, :].expand(b, 1, 8, 8)
    shifted = torch.gather(shifted, 3, cols)
    std = torch.rand(b, 1, 1, 1, generator=gen) * noise_max
    return shifted + std * torch.randn(shifted.shape, generator=gen)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed, args.threads)
    default = load_default_module()
    gen = torch.Generator().manual_seed(args.seed)

    x, y = load_digits_tensor()
    # stratified split: per class, a seeded permutation, 20% to test
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = len(idx) // 5
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]

    clf = default.DigitClassifier(width=args.width)
    opt = torch.optim.AdamW(clf.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (len(x_tr) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch
    )
    for epoch in range(args.epochs):
        clf.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            b = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb = augment(x_tr[b], args.noise_max, gen)
            loss = F.cross_entropy(clf(xb), y_tr[b], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(x_tr):.4f}", flush=True)

    clf.eval()
    with torch.no_grad():
        acc = float((clf(x_te).argmax(-1) == y_te).float().mean())
        noisy = x_te + 0.2 * torch.randn(x_te.shape, generator=gen)
        acc_noisy = float((clf(noisy).argmax(-1) == y_te).float().mean())
        logp = torch.log_softmax(clf(x_te), -1)
        logp_true = float(logp.gather(1, y_te[:, None]).mean())
        logp_min = float(logp.min())
    wall = time.perf_counter() - start
    print(f"test accuracy {acc:.4f} (noise 0.2: {acc_noisy:.4f}); mean log p(true) {logp_true:.3f}")
    print(f"wall time {wall:.1f} s on {args.threads} threads")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in clf.state_dict().items()}, str(out / "model.safetensors")
    )
    # class-mean images (all 1797 digits): the closed-form "template" reward's centres
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    save_file({"class_means": means.contiguous()}, str(out / "class_means.safetensors"))
    config = {
        "architecture": "glass_core.models.default.DigitClassifier",
        "class_means": "class_means.safetensors: [10, 1, 8, 8] mean image per class (all data)",
        "width": args.width,
        "num_classes": 10,
        "input": "[B, 1, 8, 8] float in [-1, 1], ink = +1 (sklearn digits / 16 * 2 - 1)",
        "reward": "log_softmax(logits)[:, target]",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _write_provenance(
        out,
        script="scripts/train_default_reward.py",
        seed=args.seed,
        args=vars(args),
        dataset="sklearn load_digits (1797 images, 8x8, 10 classes); stratified 80/20 split",
        metrics={
            "test_accuracy": acc,
            "test_accuracy_noise_0.2": acc_noisy,
            "test_mean_log_p_true": logp_true,
            "test_min_log_p": logp_min,
            "num_train": len(x_tr),
            "num_test": len(x_te),
        },
        wall_time_seconds=round(wall, 2),
        wall_time_note=f"torch.set_num_threads({args.threads}) on a shared 2-core CPU machine",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
