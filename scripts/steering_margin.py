#!/usr/bin/env python
"""Seeds-averaged steering gain of the embedded model, used to set the margin in
tests/digits/test_default_model.py.

For each seed: FK steering with GLASS transitions (the test's small configuration) and plain
sampling with the same GLASS transition, same initial-noise generator; gain = importance-weighted
mean reward of the final FK particles minus the mean reward of the unsteered samples. Prints the
per-seed gains, their mean and standard deviation, and the margin the test uses.

    python scripts/steering_margin.py --seeds 10
"""

from __future__ import annotations

import argparse
import statistics

import torch
from glass_core.align import fk_steering
from glass_core.digits.assets import load_default_model, load_default_reward
from glass_core.schedules import uniform_grid
from glass_core.transitions import Glass, sample

# the configuration tests/digits/test_default_model.py runs (keep in sync)
CONFIG = {"particles": 8, "groups": 4, "transitions": 2, "inner_steps": 4, "lambda_": 4.0}


def gain(seed: int, target: int = 3) -> float:
    model = load_default_model()
    reward = load_default_reward(target)
    c = CONFIG
    grid = uniform_grid(c["transitions"])
    tr = Glass(rho="ddpm", inner_steps=c["inner_steps"])
    res = fk_steering(
        model,
        reward,
        transition=tr,
        num_particles=c["particles"],
        time_grid=grid,
        shape=(1, 8, 8),
        potential="diff",
        lambda_=c["lambda_"],
        generator=torch.Generator().manual_seed(seed),
        num_groups=c["groups"],
        progress=False,
    )
    steered = float((res.log_weights.exp() * res.rewards.double()).sum(-1).mean())
    n = c["particles"] * c["groups"]
    with torch.no_grad():
        x = sample(
            model, tr, grid, shape=(n, 1, 8, 8), generator=torch.Generator().manual_seed(seed)
        ).samples
        plain = float(reward(x).double().mean())
    return steered - plain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gains = [gain(s) for s in range(args.seeds)]
    for s, g in enumerate(gains):
        print(f"seed {s}: gain {g:+.3f}")
    mean, sd = statistics.mean(gains), statistics.stdev(gains)
    print(f"config {CONFIG}")
    print(
        f"mean gain {mean:.3f}, sd {sd:.3f}, min {min(gains):.3f}; "
        f"margin for a 2-seed average = mean - 3 sd / sqrt(2) = {mean - 3 * sd / 2**0.5:.3f}"
    )


if __name__ == "__main__":
    main()
