"""Seeded Gaussian noise for tensors of any shape, device and dtype (diffusers-style generators)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from glass_core.errors import InvalidInputError

Generator = torch.Generator | Sequence[torch.Generator] | None

# Low-precision dtypes are drawn in float32 and cast, so the same seed gives the same noise
# (up to rounding) whatever precision the model runs in.
_DRAW_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _generator_list(generator: object) -> list[torch.Generator]:
    gens = list(generator) if isinstance(generator, (list, tuple)) else []
    if not gens or not all(isinstance(g, torch.Generator) for g in gens):
        raise InvalidInputError(
            "generator must be None, a torch.Generator or a non-empty list of them, "
            f"got {generator!r}"
        )
    return gens


def _draw(
    shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    draw_dtype = _DRAW_DTYPE.get(dtype, dtype)
    # Draw on the generator's device (a CPU generator can seed GPU noise), then move.
    draw_device = gen.device if gen is not None else device
    out = torch.randn(shape, generator=gen, device=draw_device, dtype=draw_dtype)
    return out.to(device=device, dtype=dtype)


def randn(
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw a standard normal tensor of `shape`.

    `generator` is None, one torch.Generator, or a list of generators: then the leading dimension is
    split into len(list) equal chunks and chunk b is drawn from generator b (so row-group b of a
    batched call equals an unbatched call seeded with generator b).

    Parameters
    ----------
    shape : sequence of int
        The tensor's shape.
    generator : torch.Generator, list of them, or None
        The random source(s).
    device : torch.device or str
        Where the tensor goes.
    dtype : torch.dtype
        Its dtype.

    Returns
    -------
    torch.Tensor
        The draw.

    Raises
    ------
    InvalidInputError
        A generator list that does not split the leading dimension.
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device(device)
    if hasattr(generator, "glass_randn"):  # a rank's view (glass_core.align.distributed)
        return generator.glass_randn(shape, device=device, dtype=dtype)  # type: ignore[union-attr]
    if generator is None or isinstance(generator, torch.Generator):
        return _draw(shape, generator, device, dtype)
    gens = _generator_list(generator)
    if not shape or shape[0] % len(gens) != 0:
        raise InvalidInputError(
            f"generator: a list of {len(gens)} generators needs a leading dimension divisible by "
            f"{len(gens)}, got shape {shape}"
        )
    chunk = (shape[0] // len(gens), *shape[1:])
    return torch.cat([_draw(chunk, g, device, dtype) for g in gens], dim=0)


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Draw standard normal noise shaped like `x` (same device and dtype); see `randn`.

    Parameters
    ----------
    x : torch.Tensor
        The shape, device and dtype to copy.
    generator : torch.Generator, list of them, or None
        The random source(s).

    Returns
    -------
    torch.Tensor
        The draw.
    """
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def rand(
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Uniform [0, 1) tensor with the same generator rules as `randn`.

    Parameters
    ----------
    shape : sequence of int
        The tensor's shape.
    generator : torch.Generator, list of them, or None
        The random source(s).
    device : torch.device or str
        Where the tensor goes.
    dtype : torch.dtype
        Its dtype.

    Returns
    -------
    torch.Tensor
        The draw.
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device(device)

    def draw(sh, gen):
        dev = gen.device if gen is not None else device
        return torch.rand(sh, generator=gen, device=dev, dtype=dtype).to(device)

    if hasattr(generator, "glass_rand"):  # a rank's view (glass_core.align.distributed)
        return generator.glass_rand(shape, device=device, dtype=dtype)  # type: ignore[union-attr]
    if generator is None or isinstance(generator, torch.Generator):
        return draw(shape, generator)
    gens = _generator_list(generator)
    if not shape or shape[0] % len(gens) != 0:
        raise InvalidInputError(
            f"generator: a list of {len(gens)} generators needs a leading dimension divisible by it"
        )
    chunk = (shape[0] // len(gens), *shape[1:])
    return torch.cat([draw(chunk, g) for g in gens], dim=0)


def snapshot(generator: object) -> list[torch.Tensor] | None:
    """Save the states of a torch.Generator (or a list of them) to replay a failed step.

    None for other generators, or while a CUDA graph is being captured.
    """
    gens = generator if isinstance(generator, list | tuple) else [generator]
    if not gens or not all(isinstance(g, torch.Generator) for g in gens):
        return None
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return None
    return [g.get_state() for g in gens]  # type: ignore[union-attr]


def replayed(generator: object, states: list[torch.Tensor] | None) -> object:
    """Return fresh generators in the `snapshot` states (the caller's are left alone).

    `generator` itself where there is no snapshot (other generators: not replayed).
    """
    if states is None:
        return generator
    gens = generator if isinstance(generator, list | tuple) else [generator]
    clones = []
    for g, state in zip(gens, states, strict=True):
        clone = torch.Generator(device=g.device)  # type: ignore[union-attr]
        clone.set_state(state)
        clones.append(clone)
    return clones if isinstance(generator, list | tuple) else clones[0]
