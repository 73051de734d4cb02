#!/usr/bin/env python
"""Train the embedded default model: a tiny rectified-flow UNet2DModel on scikit-learn's 8x8 digits.

Data: sklearn.datasets.load_digits (1797 grey-scale 8x8 images; ships inside scikit-learn, no
download), scaled to [-1, 1]. Resolution: native 8x8. Upsampling to 16x16 adds no information (the
source is 8x8), costs 4x compute per network call, and the demo has to run hundreds of NFE for
dozens of particles and three methods in under two minutes on 2 CPU cores; pictures are enlarged
with nearest-neighbour only for display.

Model: diffusers UNet2DModel (3 levels 8 -> 4 -> 2, widths 32/64/64, self-attention at 2x2; about
1.1 M parameters, 4.5 MB in float32 safetensors), trained with the rectified-flow / flow-matching
loss in diffusers' convention (x = (1 - sigma) z + sigma eps, network timestep 1000 * sigma,
target v = eps - z), sigma ~ U(0, 1), AdamW with one-cycle LR, EMA of weights (the EMA is shipped).
Scheduler: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).

Output (a diffusers pipeline directory; DiffusionPipeline.from_pretrained loads it as a
DDPMPipeline whose scheduler step is the flow's Euler step):
python/glass_core/data/default_model/{model_index.json, unet/, scheduler/, provenance.json}.

Deterministic given --seed (torch deterministic algorithms, fixed thread count).

    python scripts/train_default_model.py             # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from _common import DATA_DIR, load_default_module, load_digits_tensor, seed_everything
from _common import write_provenance as _write_provenance


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default: %(default)s)")
    p.add_argument("--steps", type=int, default=2500, help="optimiser steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: %(default)s)")
    p.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)"
    )
    p.add_argument("--ema", type=float, default=0.998, help="EMA decay (default: %(default)s)")
    p.add_argument(
        "--eval-samples",
        type=int,
        default=500,
        help="samples for the final check (default: %(default)s)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=DATA_DIR / "default_model",
        help="output dir (default: %(default)s)",
    )
    p.add_argument(
        "--reward-dir",
        type=Path,
        default=DATA_DIR / "default_reward",
        help="classifier used for the final sample check, if present (default: %(default)s)",
    )
    return p.parse_args(argv)


@torch.no_grad()
def euler_sample(unet: torch.nn.Module, n: int, steps: int, gen: torch.Generator) -> torch.Tensor:
    """Plain Euler on the flow in diffusers' sigma convention (sigma 1 -> 0)."""
    x = torch.randn((n, 1, 8, 8), generator=gen)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        v = unet(x, sigmas[i].expand(n) * 1000.0).sample
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed, args.threads)
    default = load_default_module()
    from diffusers import DDPMPipeline, FlowMatchEulerDiscreteScheduler, UNet2DModel

    gen = torch.Generator().manual_seed(args.seed)
    x_all, _ = load_digits_tensor()
    unet = UNet2DModel(**default.UNET_CONFIG)
    n_params = sum(p.numel() for p in unet.parameters())
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    print(f"UNet2DModel: {n_params / 1e6:.2f} M parameters; {len(x_all)} images", flush=True)

    running = 0.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(x_all), (args.batch_size,), generator=gen)
        z = x_all[idx]
        eps = torch.randn(z.shape, generator=gen)
        sigma = torch.rand(args.batch_size, generator=gen)
        s = sigma[:, None, None, None]
        x = (1.0 - s) * z + s * eps
        loss = (unet(x, sigma * 1000.0).sample - (eps - z)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1.0 - decay)
        running = 0.98 * running + 0.02 * float(loss.detach()) if step > 1 else float(loss.detach())
        if step % 250 == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            print(f"step {step:5d}  loss(avg) {running:.4f}  {elapsed:6.1f} s", flush=True)
    train_wall = time.perf_counter() - start

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scheduler = FlowMatchEulerDiscreteScheduler(**default.SCHEDULER_CONFIG)
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(str(out), safe_serialization=True)

    metrics: dict[str, object] = {
        "final_loss_running_avg": round(running, 5),
        "num_parameters": n_params,
    }
    if args.eval_samples > 0 and (args.reward_dir / "config.json").is_file():
        reward = default.load_default_reward(0, args.reward_dir)
        samples = euler_sample(ema.eval(), args.eval_samples, 50, gen)
        with torch.no_grad():
            probs = torch.softmax(reward.logits(samples.clamp(-1, 1)), -1)
        conf = probs.max(-1).values
        hist = torch.bincount(probs.argmax(-1), minlength=10)
        metrics.update(
            eval_samples=args.eval_samples,
            eval_sampler="Euler, 50 steps, EMA weights",
            eval_classifier_mean_confidence=round(float(conf.mean()), 4),
            eval_classifier_frac_confidence_gt_0_8=round(float((conf > 0.8).float().mean()), 4),
            eval_class_histogram=hist.tolist(),
        )
        print(
            f"samples: mean classifier confidence {float(conf.mean()):.3f}, "
            f"frac > 0.8: {float((conf > 0.8).float().mean()):.3f}, classes {hist.tolist()}"
        )
    wall = time.perf_counter() - start
    print(f"wall time {wall:.1f} s (training {train_wall:.1f} s) on {args.threads} threads")
    _write_provenance(
        out,
        script="scripts/train_default_model.py",
        seed=args.seed,
        args=vars(args),
        dataset="sklearn.datasets.load_digits (all 1797 images, 8x8, scaled to [-1, 1])",
        model="diffusers UNet2DModel (EMA weights) + FlowMatchEulerDiscreteScheduler(shift=1)",
        convention=(
            "diffusers flow matching: x = (1 - sigma) z + sigma eps, timestep = 1000 sigma, "
            "prediction v = eps - z; glass_core t = 1 - sigma, velocity u = -v"
        ),
        metrics=metrics,
        wall_time_seconds=round(wall, 2),
        train_wall_time_seconds=round(train_wall, 2),
        wall_time_note=f"torch.set_num_threads({args.threads}) on a shared 2-core CPU machine",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
