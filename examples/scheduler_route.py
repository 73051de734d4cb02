"""GLASS transitions and FK steering inside a diffusers pipeline's own ``__call__``, offline.

A tiny random-weight FluxPipeline (the builder of ``steer_tiny_pipelines.py``: nothing is
downloaded) is run three ways with the same seed:

1. as shipped (FlowMatchEuler);
2. with ``pipe.scheduler = TransitionScheduler.wrap(...)``: GLASS transitions on the same grid;
3. with FK steering toward a "redness" image reward through ``callback_on_step_end``;

and (3) is checked against ``glass_core.steer(method="fk")`` with the same seed: the same
samples and rewards. The images are noise (random weights): this shows the plumbing in a few
seconds on a CPU. docs/steering_any_pipeline.md explains the route and its limits.

    python examples/scheduler_route.py [--particles N] [--steps T]

Needs the diffusers extra: pip install "glass-core[diffusers]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steer_tiny_pipelines import SIZE, TOKENS, eval_mode, flux_pipeline, redness

PROMPT = "a red house on a green hill"


def run(particles: int, steps: int) -> dict[str, Any]:
    """The three runs; returns their mean rewards and the largest difference to steer."""
    import glass_core
    from glass_core.diffusers import TransitionScheduler, flux_layout, steering_callback
    from glass_core.rewards.loading import image_reward
    from glass_core.transitions import Glass

    pipe = eval_mode(flux_pipeline())
    pipe.set_progress_bar_config(disable=True)
    base = pipe.scheduler
    call = {"height": SIZE, "width": SIZE, "max_sequence_length": TOKENS, "output_type": "pt"}
    reward = image_reward(redness)
    transition = Glass(rho=0.4, inner_steps=2)

    plain = pipe(PROMPT, num_images_per_prompt=particles, num_inference_steps=steps * 2,
                 generator=torch.Generator().manual_seed(0), **call).images  # fmt: skip

    g = torch.Generator().manual_seed(0)
    pipe.scheduler = TransitionScheduler.wrap(
        base, transition=transition, generator=g, layout=flux_layout(pipe, SIZE, SIZE)
    )
    glass = pipe(PROMPT, num_images_per_prompt=particles, num_inference_steps=steps,
                 generator=g, **call).images  # fmt: skip

    g = torch.Generator().manual_seed(1)
    pipe.scheduler = TransitionScheduler.wrap(
        base, transition=transition, generator=g, layout=flux_layout(pipe, SIZE, SIZE)
    )
    cb = steering_callback(pipe, reward=reward, method="fk", num_particles=particles, lambda_=50.0)
    pipe(PROMPT, num_images_per_prompt=particles, num_inference_steps=steps, generator=g,
         callback_on_step_end=cb, callback_on_step_end_tensor_inputs=cb.tensor_inputs,
         **call)  # fmt: skip
    fk = cb.result

    pipe.scheduler = base  # steer unwraps a wrapped scheduler too; here it is the pipeline's own
    ref = glass_core.steer(
        pipe, PROMPT, reward=reward, method="fk", lambda_=50.0, transition=transition,
        num_particles=particles, num_transitions=steps, generator=torch.Generator().manual_seed(1),
        height=SIZE, width=SIZE, encode_kwargs={"max_sequence_length": TOKENS},
        output_type="latent", progress=False,
    )  # fmt: skip
    assert fk is not None
    return {
        "reward euler (as shipped)": float(redness(plain).mean()),
        "reward glass scheduler": float(redness(glass).mean()),
        "reward fk callback": float(fk.rewards.mean()),
        "max |fk callback - steer fk| samples": float(
            (fk.samples.reshape(ref.samples.shape) - ref.samples).abs().max()
        ),
        "log-evidence callback / steer": (float(fk.log_evidence[0]), float(ref.log_evidence[0])),
        "nfe per particle": fk.nfe,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, run, print the figures and return them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="transitions (2 evaluations each)")
    args = ap.parse_args(argv)
    out = run(args.particles, args.steps)
    for k, v in out.items():
        print(f"{k:40s} {v}")
    return out


if __name__ == "__main__":
    main()
