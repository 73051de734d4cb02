"""Steer tiny random-weight FLUX.2, FLUX.2 [klein], Qwen-Image, SANA and Wan 2.x pipelines
offline, and check each against the pipeline's own sampler.

The pipelines come from ``tests/tiny_families.py`` (the builders the tests use: diffusers' dummy
components, a word-level tokenizer made on the spot, nothing downloaded). For each family this

1. runs ``glass_core.steer(..., method="sample", transition=ODE(), num_particles=1)`` and the
   pipeline's own ``pipe(..., num_inference_steps=K)`` with the same seed, and prints the
   largest relative difference of the decoded outputs (rounding, ~1e-7);
2. steers 4 particles toward a "redness" reward with FK steering and saves the best image (the
   Wan video as an animated GIF of its frames, scored per frame and averaged).

The outputs are noise (the weights are random): this shows the plumbing on a CPU.

    python examples/steer_new_families.py [--out DIR] [--families flux2 wan ...]

Needs the diffusers extra: pip install "glass-core[diffusers]" (or pip install -e ".[diffusers]").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny_families  # the shared builders live beside the tests

PROMPT = "a red house"


def redness(images: torch.Tensor) -> torch.Tensor:
    """Mean red minus mean green and blue, per image ([M, 3, H, W] in [0, 1])."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


def parity(name: str, pipe: Any, k: int = 3) -> float:
    """Largest relative difference between steer's deterministic sampler and the pipeline's."""
    from glass_core import steer
    from glass_core.transitions import ODE

    call = tiny_families.SMALL_CALL[name]
    ref = pipe(
        prompt=[PROMPT],
        num_inference_steps=k,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        **call,
    )
    ref = ref.frames if hasattr(ref, "frames") else ref.images
    res = steer(
        pipe,
        PROMPT,
        method="sample",
        transition=ODE(),
        num_particles=1,
        num_transitions=k,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        progress=False,
        **call,
    )
    return float((res.images - ref).abs().max() / ref.abs().max())


def steer_and_save(name: str, pipe: Any, out: Path) -> float:
    """FK-steer 4 particles toward redness; save the best image (a GIF for a video)."""
    from glass_core import steer
    from glass_core.rewards.loading import image_reward
    from glass_core.transitions import Glass

    res = steer(
        pipe,
        PROMPT,
        reward=image_reward(redness),
        method="fk",
        transition=Glass(inner_steps=2),
        num_particles=4,
        num_transitions=3,
        generator=torch.Generator().manual_seed(1),
        output_type="pil",
        progress=False,
        **tiny_families.SMALL_CALL[name],
    )
    best = res.best()[0]
    if isinstance(best, list):  # a video: its frames
        best[0].save(out / f"{name}-best.gif", save_all=True, append_images=best[1:], loop=0)
    else:
        best.save(out / f"{name}-best.png")
    return float(res.rewards.max())


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("glass_out/new_families"))
    parser.add_argument("--families", nargs="+", default=sorted(tiny_families.BUILDERS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in args.families:
        pipe = tiny_families.BUILDERS[name]()
        summary[name] = {"parity": parity(name, pipe), "best": steer_and_save(name, pipe, args.out)}
        print(f"{name:12s} parity {summary[name]['parity']:.1e}  best reward "
              f"{summary[name]['best']:+.4f}")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
