"""Run any glass_core transition as a drop-in diffusers scheduler (``TransitionScheduler``).

``pipe.scheduler = TransitionScheduler.wrap(pipe.scheduler, transition=Glass(...), generator=g)``
makes the pipeline's own ``__call__`` run T transitions on the grid the wrapped scheduler would
have used (the pipeline's ``set_timesteps`` arguments: shift, dynamic ``mu``, custom sigmas).
``timesteps`` list one entry per model evaluation (all evaluations of transition 1, then of
transition 2, ...), and ``step`` returns as the next "latents" the point where the running
transition wants the network evaluated next, keeping the transition's state itself (the outer
state x_t and the outputs so far; ``_replay`` re-runs glass_core's own transition code).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from glass_core.diffusers._replay import (
    denoised_from,
    evaluation_times,
    run_to_first_unanswered,
)
from glass_core.diffusers.layouts import Layout
from glass_core.errors import InvalidInputError, UnsupportedModelError

#: config keys of the wrapper itself (the rest of its config is the wrapped scheduler's)
OWN_KEYS = ("base_class_name", "transition")


def transition_spec(transition: Any) -> dict[str, Any]:
    """Describe a glass_core transition as JSON-able ``{"class": name, **constructor args}``.

    The constructor arguments are read from the transition's attributes of the same names.

    Parameters
    ----------
    transition : glass_core transition
        A ``glass_core.transitions`` object (Glass, ODE, SDE).

    Returns
    -------
    dict
        ``{"class": class name, <constructor argument>: value, ...}``.

    Raises
    ------
    InvalidInputError
        If `transition` is not an instance of a class exported by ``glass_core.transitions``.
    """
    from glass_core import transitions

    name = type(transition).__name__
    if getattr(transitions, name, None) is not type(transition):
        raise InvalidInputError(
            f"transition must be a glass_core.transitions object (Glass, ODE, SDE), got {name}"
        )
    params = [p for p in inspect.signature(type(transition).__init__).parameters if p != "self"]
    return {"class": name, **{p: getattr(transition, p) for p in params}}


def transition_from_spec(spec: dict[str, Any]) -> Any:
    """Rebuild a glass_core transition from its spec (inverse of `transition_spec`).

    Parameters
    ----------
    spec : dict
        ``{"class": name, **constructor arguments}``.

    Returns
    -------
    glass_core transition
        ``glass_core.transitions.<name>(**constructor arguments)``.

    Raises
    ------
    InvalidInputError
        If ``spec["class"]`` is missing or names no class of ``glass_core.transitions``.
    """
    from glass_core import transitions

    args = dict(spec)
    cls = getattr(transitions, str(args.pop("class", "")), None)
    if not isinstance(cls, type):
        raise InvalidInputError(f"transition: not a glass_core transition spec: {spec!r}")
    return cls(**args)


def check_flow_scheduler(base: Any) -> None:
    """Reject a scheduler the transitions cannot serve.

    A scheduler is flow-matching if its class name starts with ``FlowMatch`` or its config has
    ``prediction_type="flow_prediction"``.

    Parameters
    ----------
    base : diffusers scheduler
        The scheduler to check (reads its class name and ``config``).

    Raises
    ------
    UnsupportedModelError
        If `base` is not flow-matching (VP/epsilon), or its config sets ``invert_sigmas``.
    """
    cfg = base.config
    flow = type(base).__name__.startswith("FlowMatch") or (
        cfg.get("prediction_type") == "flow_prediction"
    )
    if not flow:
        raise UnsupportedModelError(
            f"scheduler: {type(base).__name__} (prediction_type="
            f"{cfg.get('prediction_type')!r}) is not a flow-matching scheduler; "
            "TransitionScheduler serves flow pipelines (FLUX, SD3, Qwen-Image, Wan, FLUX.2); "
            "for VP/epsilon pipelines use glass_core.steer"
        )
    if cfg.get("invert_sigmas", False):
        raise UnsupportedModelError(
            "scheduler: invert_sigmas=True (time runs backwards) is not served"
        )


def grid_from_sigmas(sigmas: Any) -> np.ndarray:
    """Convert a flow scheduler's sigmas to glass_core times t = 1 - sigma.

    Consecutive repeats (second-order schedulers) are dropped.

    Parameters
    ----------
    sigmas : array-like or torch.Tensor
        The scheduler's sigmas, falling to 0.

    Returns
    -------
    np.ndarray
        float64 times, rising strictly from t0 >= 0 to exactly 1.

    Raises
    ------
    UnsupportedModelError
        If fewer than two distinct times remain, they do not rise strictly, the last is not 1,
        or the first is below 0.
    """
    t = 1.0 - torch.as_tensor(sigmas).detach().cpu().double().numpy()
    t = t[np.concatenate([[True], np.diff(t) != 0])]
    if len(t) < 2 or np.any(np.diff(t) <= 0) or t[-1] != 1.0 or t[0] < 0.0:
        raise UnsupportedModelError(
            f"scheduler: its sigmas must fall strictly from <= 1 to 0, got {t[::-1][::-1]}"
        )
    return t


@dataclass(frozen=True)
class Boundary:
    """Hold the start of transition `step` of the run (1, 2, ...).

    Fields: its time t, the particles x_t and D_t(x_t) from the network's first evaluation
    there (model layout).
    """

    step: int
    t: float
    x: torch.Tensor
    denoised: torch.Tensor


@dataclass(frozen=True)
class TransitionState:
    """Hold transition `k` in progress.

    Fields: x at its start time, the outputs (glass_core velocities) of its evaluations so
    far, and the generator state its noise is drawn from.
    """

    k: int
    x: torch.Tensor
    outputs: list[torch.Tensor]
    generator_state: torch.Tensor


class TransitionScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """Run glass_core transitions (Glass, ODE, SDE) inside any flow-matching pipeline.

    A diffusers scheduler: ``timesteps`` list every model evaluation of every transition, and
    ``step`` returns the next point where the running transition wants the network evaluated.

    Parameters
    ----------
    base : diffusers scheduler
        The flow-matching scheduler whose grid is used (FlowMatchEulerDiscreteScheduler, or UniPC /
        DPM-Solver with ``prediction_type="flow_prediction"``).
    transition : glass_core transition, optional
        Default ``Glass()``.
    generator : torch.Generator, optional
        The generator passed to the pipeline (pipelines pass none to ``step``): the transitions
        draw their noise from it after the pipeline's initial noise, as ``glass_core.steer``.
        None: a private generator seeded from torch's global RNG.
    layout : Layout, optional
        The layout the transitions run in (``flux_layout(pipe, height, width)`` for bit-equality
        with ``steer`` on FLUX); default the pipeline's own.

    Raises
    ------
    UnsupportedModelError
        ``base`` is not a flow-matching scheduler, or sets ``invert_sigmas``.
    InvalidInputError
        ``generator`` is not a torch.Generator or None, or ``transition`` is not a
        ``glass_core.transitions`` object.
    """

    order = 1
    base: Any  # the wrapped scheduler
    _compatibles: ClassVar[list[Any]] = []

    def __init__(
        self,
        base: Any = None,
        transition: Any = None,
        generator: torch.Generator | None = None,
        layout: Layout | None = None,
    ) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        from glass_core.transitions import Glass

        base = FlowMatchEulerDiscreteScheduler() if base is None else base
        if isinstance(base, TransitionScheduler):
            base = base.base
        check_flow_scheduler(base)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InvalidInputError(
                f"generator must be one torch.Generator (the one passed to the pipeline) or None, "
                f"got {type(generator).__name__}"
            )
        self.base = base
        self.transition = Glass() if transition is None else transition
        self.generator = generator
        self.layout = Layout() if layout is None else layout
        own = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
        self.register_to_config(
            **own,
            base_class_name=type(base).__name__,
            transition=transition_spec(self.transition),
        )
        #: hooks called once per run with the pipeline's first latents at the first ``step``,
        #: before any transition noise is drawn (a steering callback draws its seeds there)
        self.start_hooks: list[Callable[[torch.Tensor], None]] = []
        self.time_grid = np.zeros(0)
        self.evaluations: list[list[float]] = []
        self.timesteps = torch.zeros(0)
        self.sigmas = torch.zeros(0)
        self.num_inference_steps: int | None = None
        self._begin_index: int | None = None
        self._reset_run()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def wrap(
        cls,
        scheduler: Any,
        *,
        transition: Any = None,
        generator: torch.Generator | None = None,
        layout: Layout | None = None,
    ) -> TransitionScheduler:
        """Wrap a pipeline's flow scheduler.

        ``pipe.scheduler = TransitionScheduler.wrap(pipe.scheduler, transition=...,
        generator=g)``; a TransitionScheduler given here is unwrapped first (its base is
        wrapped).

        Parameters
        ----------
        scheduler : diffusers flow scheduler
            The scheduler whose grid the transitions run on.
        transition, generator, layout
            As the constructor.

        Returns
        -------
        TransitionScheduler
            The wrapper (an instance of ``cls``).

        Raises
        ------
        UnsupportedModelError, InvalidInputError
            As the constructor.
        """
        return cls(scheduler, transition=transition, generator=generator, layout=layout)

    @classmethod
    def from_config(  # type: ignore[override]
        cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any
    ) -> Any:
        """Build the scheduler from a config.

        From a TransitionScheduler's config (its base and transition are rebuilt), or from a
        flow-matching scheduler's config (``transition=`` given or the default). ``generator``
        and ``layout`` are not part of a config: pass them here. An unknown base class name
        falls back to ``FlowMatchEulerDiscreteScheduler``.

        Parameters
        ----------
        config : dict, optional
            A TransitionScheduler's or a flow-matching scheduler's config.
        return_unused_kwargs : bool
            Also return the keyword arguments the base scheduler did not use.
        **kwargs
            ``transition``, ``generator``, ``layout`` for the wrapper; the rest go to the base
            scheduler's ``from_config``.

        Returns
        -------
        TransitionScheduler or tuple
            The scheduler, or ``(scheduler, unused kwargs)`` if `return_unused_kwargs`.

        Raises
        ------
        UnsupportedModelError, InvalidInputError
            As the constructor; InvalidInputError also for a spec naming no glass_core transition.
        """
        import diffusers

        cfg = dict(config or {})
        own = {k: kwargs.pop(k) for k in ("transition", "generator", "layout") if k in kwargs}
        name = cfg.pop("base_class_name", None) or cfg.get("_class_name")
        spec = cfg.pop("transition", None)
        if not isinstance(name, str) or name == cls.__name__ or not hasattr(diffusers, name):
            name = "FlowMatchEulerDiscreteScheduler"
        base_cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        base, unused = getattr(diffusers, name).from_config(
            base_cfg, return_unused_kwargs=True, **kwargs
        )
        if "transition" not in own and isinstance(spec, dict):
            own["transition"] = transition_from_spec(spec)
        out = cls(base, **own)
        return (out, unused) if return_unused_kwargs else out

    # -- the grid --------------------------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
        **kwargs: Any,
    ) -> None:
        """Set the grid of transitions and list their evaluation times as ``timesteps``.

        The wrapped scheduler's ``set_timesteps`` with the same arguments gives the grid of
        transitions (through ``plan``); ``timesteps`` then list each transition's evaluation
        times (diffusers units: sigma * num_train_timesteps, sigma = 1 - t). Resets the run.

        Parameters
        ----------
        num_inference_steps : int, optional
            Number of steps of the wrapped scheduler's grid.
        device : str or torch.device, optional
            Device of ``timesteps``.
        sigmas, mu, timesteps : optional
            Passed to the wrapped scheduler's ``set_timesteps`` (custom sigmas, dynamic shift).
        **kwargs
            Further arguments for the wrapped scheduler's ``set_timesteps``.

        Raises
        ------
        UnsupportedModelError
            If the wrapped scheduler's sigmas do not fall strictly to 0 (see
            ``grid_from_sigmas``).
        """
        given = {"num_inference_steps": num_inference_steps, "sigmas": sigmas, "mu": mu}
        given.update(timesteps=timesteps, **kwargs)
        self.base.set_timesteps(device=device, **{k: v for k, v in given.items() if v is not None})
        grid = self.plan(grid_from_sigmas(self.base.sigmas))
        self.time_grid = grid
        self.evaluations = [
            evaluation_times(self.transition, float(a), float(b))
            for a, b in itertools.pairwise(grid)
        ]
        flat = np.asarray([t for ts in self.evaluations for t in ts], dtype=np.float64)
        train = float(self.base.config.get("num_train_timesteps", 1000))
        self.timesteps = torch.as_tensor((1.0 - flat) * train, dtype=torch.float32, device=device)
        self.sigmas = torch.as_tensor(np.append(1.0 - flat, 0.0), dtype=torch.float32)
        self.num_inference_steps = len(grid) - 1
        self._begin_index = None
        self._reset_run()

    def plan(self, grid: np.ndarray) -> np.ndarray:
        """Return the transitions' times from the wrapped scheduler's grid.

        Here one transition per step (the grid itself); subclasses may plan otherwise.

        Parameters
        ----------
        grid : np.ndarray
            float64 times t = 1 - sigma of the wrapped scheduler, rising to 1.

        Returns
        -------
        np.ndarray
            The transitions' boundary times.
        """
        return grid

    @property
    def transition_starts(self) -> list[int]:
        """Index into ``timesteps`` of each transition's first evaluation."""
        return [int(v) for v in np.cumsum([0] + [len(e) for e in self.evaluations])[:-1]]

    @property
    def init_noise_sigma(self) -> float:
        """Return 1.0: the pipeline's initial noise is unscaled (flow matching)."""
        return 1.0

    @property
    def step_index(self) -> int | None:
        """Return the number of ``step`` calls of this run so far, or None before the first."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Return the evaluation index set by ``set_begin_index``, or None."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the run at evaluation `begin_index` (img2img).

        Only a transition's first evaluation is allowed (img2img strengths falling on a
        transition boundary).

        Parameters
        ----------
        begin_index : int
            Index into ``timesteps`` of the first evaluation to run.

        Raises
        ------
        UnsupportedModelError
            `begin_index` falls inside a transition.
        """
        if begin_index not in self.transition_starts:
            raise UnsupportedModelError(
                f"begin_index={begin_index}: an img2img start must fall on a transition boundary "
                f"(evaluation indices {self.transition_starts}); pick a strength with "
                "strength * num_inference_steps a whole number of transitions"
            )
        self._begin_index = begin_index

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return `sample` unchanged (flow models take unscaled input).

        Parameters
        ----------
        sample : torch.Tensor
            The latents.
        *args, **kwargs
            Ignored (diffusers passes the timestep).

        Returns
        -------
        torch.Tensor
            `sample` itself.
        """
        return sample

    def scale_noise(
        self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Noise `sample` by the flow forward process at `timestep` (img2img start).

        Returns sigma * noise + (1 - sigma) * sample with sigma = timestep /
        num_train_timesteps.

        Parameters
        ----------
        sample : torch.Tensor
            Clean latents.
        timestep : scalar or tensor
            Diffusers timestep(s) (sigma * num_train_timesteps), one or one per row.
        noise : torch.Tensor
            Gaussian noise shaped like `sample` (required).

        Returns
        -------
        torch.Tensor
            The noised latents, in `sample`'s dtype and device.

        Raises
        ------
        UnsupportedModelError
            Called during sampling: the pipeline blends latents mid-run (inpainting), which
            would replace the transitions' state.
        InvalidInputError
            `noise` is None.
        """
        if self._step_index is not None:
            raise UnsupportedModelError(
                f"{type(self).__name__}: the pipeline re-noises and blends latents during "
                "sampling (inpainting); that replaces the transitions' state mid-transition and "
                "is not supported"
            )
        if noise is None:
            raise InvalidInputError("scale_noise: noise is required (the flow forward process)")
        train = float(self.base.config.get("num_train_timesteps", 1000))
        ts = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)
        sigma = (ts / train).to(device=sample.device, dtype=sample.dtype)
        sigma = sigma.reshape(-1, *([1] * (sample.ndim - 1)))
        return sigma * noise + (1.0 - sigma) * sample

    def __len__(self) -> int:
        """Return the wrapped scheduler's ``num_train_timesteps`` (default 1000)."""
        return int(self.base.config.get("num_train_timesteps", 1000))

    # -- the run ---------------------------------------------------------------------------
    def _reset_run(self) -> None:
        self._step_index: int | None = None
        self._state: TransitionState | None = None  # the transition in progress
        self._snapshot: TransitionState | None = None  # before this step's advance
        self._expected: torch.Tensor | None = None  # latents last returned to the pipeline
        self._dtype = torch.float32
        self._first_k = 0
        self._at_boundary = False  # the last step recorded D_t(x_t) at a transition boundary
        self.final: torch.Tensor | None = None  # x at t = 1 (model layout) once finished

    @property
    def finished(self) -> bool:
        """Return True once the run reached t = 1 (``final`` holds the samples)."""
        return self.final is not None

    def _begin(self, sample: torch.Tensor) -> TransitionState:
        if not self.evaluations:
            raise InvalidInputError(f"{type(self).__name__}: call set_timesteps before step")
        self._first_k = self.transition_starts.index(self._begin_index or 0)
        self._dtype = sample.dtype
        if self.generator is None:  # reproducible under torch.manual_seed
            self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        for hook in self.start_hooks:
            hook(sample)
        x = self.layout.to_model(sample).to(torch.promote_types(sample.dtype, torch.float32))
        return TransitionState(self._first_k, x, [], self.generator.get_state())

    @property
    def run_grid(self) -> np.ndarray:
        """The times of this run's transitions (from an img2img start on)."""
        return self.time_grid[self._first_k :]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Record the network's output at the current evaluation and return the next latents.

        The next latents are the next evaluation's input, or x at t = 1 after the last. The
        first call of a run runs the ``start_hooks`` and, without a generator, seeds a private
        one from torch's global RNG.

        Parameters
        ----------
        model_output : torch.Tensor
            The network's output (diffusers flow velocity v = -u) at the current evaluation.
        timestep : Any
            The pipeline's timestep (unused: the scheduler tracks its own position).
        sample : torch.Tensor
            The latents the pipeline evaluated at; must be the ones ``step`` returned last.
        generator : Any
            Ignored: the transitions draw from the scheduler's own generator.
        return_dict : bool
            Return a ``SchedulerOutput`` rather than a tuple.
        **kwargs
            Ignored.

        Returns
        -------
        SchedulerOutput or tuple
            ``prev_sample`` (or ``(prev_sample,)``): the next latents, pipeline layout and
            `sample`'s dtype.

        Raises
        ------
        InvalidInputError
            ``set_timesteps`` was not called, ``sample`` is not the latents this scheduler
            returned last (a callback replaced them without going through ``resample``), or
            the run is already over.
        """
        if self._step_index is None:
            self._state = self._begin(sample)
        else:
            self._check_synchronised(sample)
        state = self._state
        if state is None or self.finished:
            raise InvalidInputError(f"{type(self).__name__}: step called after the last evaluation")
        u = -self.layout.to_model(model_output).to(state.x.dtype)  # glass_core u = -v
        self._snapshot = replace(state, outputs=[*state.outputs, u])
        self._at_boundary = len(state.outputs) == 0 and state.k != self._first_k
        prev = self._advance(self._snapshot)
        self._step_index = (self._step_index or 0) + 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def _check_synchronised(self, sample: torch.Tensor) -> None:
        exp = self._expected
        if sample is exp:
            return
        if exp is None or sample.shape != exp.shape or not torch.equal(sample, exp):
            raise InvalidInputError(
                "latents: the pipeline passed latents the scheduler did not return (a "
                "callback_on_step_end replaced them, e.g. by permuting particles); resample "
                "through scheduler.resample(index) so the transitions' state follows, and return "
                "its latents"
            )

    def _advance(self, state: TransitionState) -> torch.Tensor:
        """Run `state` to its first unanswered evaluation; return the pipeline latents.

        If `state`'s transition completes, continue into the next one's first evaluation;
        the new state is stored.
        """
        gen = self.generator
        assert gen is not None
        grid = self.time_grid
        while True:
            gen.set_state(state.generator_state)
            t, t_next = float(grid[state.k]), float(grid[state.k + 1])
            done, nxt = run_to_first_unanswered(
                self.transition, state.x, t, t_next, state.outputs, gen
            )
            if done is None:
                assert nxt is not None
                gen.set_state(state.generator_state)  # between steps: the transition's start
                self._state = state
                break
            if state.k + 1 == len(grid) - 1:
                self._state, self.final = state, done
                nxt = done
                break
            state = TransitionState(state.k + 1, done, [], gen.get_state())
        out = self.layout.to_pipeline(nxt).to(self._dtype)
        self._expected = out
        return out

    # -- for steering callbacks ------------------------------------------------------------
    def boundary(self) -> Boundary | None:
        """Return the transition boundary the last ``step`` reached, if any.

        The last step's output was the first evaluation of a transition of the run other
        than its first, and resampling has not consumed it yet.

        Returns
        -------
        Boundary or None
            The boundary (step number in the run, t, x_t, D_t(x_t)), else None.
        """
        snap = self._snapshot
        if snap is None or not self._at_boundary:
            return None
        t = float(self.time_grid[snap.k])
        return Boundary(
            snap.k - self._first_k, t, snap.x, denoised_from(snap.outputs[0], snap.x, t)
        )

    def resample(self, index: torch.Tensor) -> torch.Tensor:
        """Replace particle row i by row ``index[i]``; return the latents to continue from.

        Return them from the callback as ``{"latents": ...}``. At a boundary (see
        ``boundary``) the last step is redone from the gathered x_t and outputs, with the same
        noise per row (as when ``glass_core.steer`` resamples before the next transition
        draws); after the last evaluation the final samples are gathered.

        Parameters
        ----------
        index : torch.Tensor
            Ancestor row per row, [M] integers.

        Returns
        -------
        torch.Tensor
            The latents the pipeline must continue from (pipeline layout).

        Raises
        ------
        InvalidInputError
            Neither right after a transition boundary nor after the last evaluation.
        """
        snap = self._snapshot
        if snap is not None and self._at_boundary:
            self._at_boundary = False
            self.final = None
            idx = torch.as_tensor(index, dtype=torch.long, device=snap.x.device)
            gathered = replace(
                snap,
                x=snap.x.index_select(0, idx),
                outputs=[o.index_select(0, idx) for o in snap.outputs],
            )
            self._snapshot = gathered
            return self._advance(gathered)
        if self.final is not None:
            idx = torch.as_tensor(index, dtype=torch.long, device=self.final.device)
            self.final = self.final.index_select(0, idx)
            self._expected = self.layout.to_pipeline(self.final).to(self._dtype)
            return self._expected
        raise InvalidInputError(
            "resample: particles can be resampled only right after a transition boundary "
            "(scheduler.boundary() is not None) or after the last evaluation; inside a "
            "transition the rows' noise would no longer match their state"
        )


class PCFlowScheduler(TransitionScheduler):
    """Run glass_core's phi-linear predictor-corrector as a diffusers flow scheduler.

    ``pipe.scheduler = PCFlowScheduler.from_config(pipe.scheduler.config)``.

    ``set_timesteps`` takes what FlowMatchEulerDiscreteScheduler takes (``num_inference_steps``
    or ``sigmas``, ``mu``); with T steps the run is ONE deterministic transition
    ``ODE(solver="pc", substeps=T)`` from the grid's first time to 1: T evaluations, second
    order, exact data-prediction end. pc places its T steps itself (uniform in r/(r + c),
    r = alpha/sigma; docs/math.md §3.5), so of the wrapped scheduler's grid only the number of
    steps and the start are used (its shift is not). img2img can only start at step 0.

    Parameters
    ----------
    base : diffusers flow scheduler, optional
        Default ``FlowMatchEulerDiscreteScheduler()``.
    transition : ODE(solver="pc"), optional
        Only for the config round trip; its substeps are set by ``set_timesteps``.
    generator, layout
        As for ``TransitionScheduler`` (the ODE draws no noise).

    Raises
    ------
    InvalidInputError
        `transition` is given and is not ``ODE(solver="pc")``.
    UnsupportedModelError
        `base` is not a flow-matching scheduler.
    """

    def __init__(
        self,
        base: Any = None,
        transition: Any = None,
        generator: torch.Generator | None = None,
        layout: Layout | None = None,
    ) -> None:
        from glass_core.transitions import ODE

        if transition is not None and not (
            isinstance(transition, ODE) and transition.solver == PC_SOLVER
        ):
            raise InvalidInputError(
                f"transition: PCFlowScheduler runs ODE(solver={PC_SOLVER!r}), got "
                f"{transition!r}; use TransitionScheduler for other transitions"
            )
        super().__init__(base, ODE(solver=PC_SOLVER), generator, layout)

    def plan(self, grid: np.ndarray) -> np.ndarray:
        """Plan one ``ODE(solver="pc", substeps=T)`` transition over the whole grid.

        Sets ``self.transition`` with T = the wrapped grid's number of steps.

        Parameters
        ----------
        grid : np.ndarray
            float64 times t = 1 - sigma of the wrapped scheduler, rising to 1.

        Returns
        -------
        np.ndarray
            ``[grid[0], grid[-1]]``: the single transition's start and end.
        """
        from glass_core.transitions import ODE

        self.transition = ODE(solver=PC_SOLVER, substeps=len(grid) - 1)
        return grid[[0, -1]]


#: the ODE solver PCFlowScheduler runs
PC_SOLVER = "pc"
