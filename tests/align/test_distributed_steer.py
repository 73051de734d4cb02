"""glass_core.steer(..., process_group=) on a tiny text-conditioned pipeline with 2 gloo ranks
(torch.multiprocessing spawn): B = 2 prompts x N = 4 particles sharded 2 per rank and prompt, CFG
rows, an image reward that reads the per-row prompts; every rank gets the single-process result.
(The embedded default model under torchrun: tests/cli/test_cli.py.)"""

from __future__ import annotations

import os

import pytest
import torch
from spawn_ranks import spawn

pytest.importorskip("diffusers")

PROMPTS = ["a photo of a cat", "a red house"]


def _prompt_aware(images: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
    """Brightness plus a per-prompt offset: a wrong row -> prompt mapping on a rank shows up."""
    assert prompts is not None and len(prompts) == images.shape[0]
    offset = torch.tensor([0.1 * len(p) for p in prompts], dtype=images.dtype)
    return images.mean(dim=(1, 2, 3)) + offset.to(images.device)


def _worker(rank: int, world: int, port: int) -> None:
    import tiny_pipelines as tp
    import torch.distributed as dist
    from glass_core.rewards.loading import image_reward
    from glass_core.steering import steer
    from glass_core.transitions import Glass

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # CFG: 2 network rows per particle. float64 network: batches of 2 vs 4 rows change only
        # the last bits of its conv kernels, which the float32 particles then mostly round away
        # (in float32 the random-weight UNet with CFG 7.5 amplifies them to ~1e-4).
        pipe = tp.sd_pipeline("epsilon").to(torch.float64)
        kw = dict(
            reward=image_reward(_prompt_aware),
            transition=Glass(inner_steps=2),
            num_particles=4,
            num_transitions=3,
            height=tp.HEIGHT,
            width=tp.WIDTH,
            output_type="pt",
            progress=False,
        )
        for method in ("fk", "best_of_n"):
            gen = torch.Generator().manual_seed(3)
            got = steer(
                pipe, PROMPTS, method=method, generator=gen, process_group=dist.group.WORLD, **kw
            )
            ref = steer(
                pipe, PROMPTS, method=method, generator=torch.Generator().manual_seed(3), **kw
            )
            assert got.raw.world_size == world and got.rewards.shape == (2, 4)
            tol = {"rtol": 1e-6, "atol": 1e-6}
            torch.testing.assert_close(got.samples, ref.samples, **tol)
            torch.testing.assert_close(got.rewards, ref.rewards, **tol)
            torch.testing.assert_close(got.log_weights, ref.log_weights, **tol)
            torch.testing.assert_close(got.images, ref.images, **tol)
            assert got.nfe == ref.nfe == 6
            assert torch.equal(got.best_index, ref.best_index)
            if method == "fk":
                assert (got.ancestors == ref.ancestors).all()
            # rank-local counters: this rank's rows only (half of them)
            assert got.total_forward_passes * world == ref.total_forward_passes
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_steer_sharded_on_text_pipeline_equals_single_process() -> None:
    spawn(_worker, 2)
