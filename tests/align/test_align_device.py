"""GPU discipline of the alignment loops, pinned on CPU: one device->host read per FK potential
step (none on the other steps), every random draw made where its generator lives, and NaN/inf
particles still blamed on the right party although the step no longer syncs to check them."""

from __future__ import annotations

import contextlib
from collections import Counter

import numpy as np
import pytest
import torch
from align_fixtures import GRID, gen, gmm
from glass_core.align import (
    FKSampler,
    Lookahead,
    best_of_n,
    fk_steering,
    reward_guidance,
    value_estimate,
)
from glass_core.align._common import draw_seeds
from glass_core.errors import InvalidInputError, ModelError, RewardError
from glass_core.rewards import LinearReward, QuadraticReward
from glass_core.transitions import ODE, SDE, Glass

LIN = LinearReward([1.0, 0.5])

# every way a tensor's values reach Python / the host
READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__", "__array__")


@contextlib.contextmanager
def count_reads():
    """Count calls of the Tensor methods that read device values on the host."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def read(self, *args, **kwargs):
            counts[name] += 1
            return fn(self, *args, **kwargs)

        return read

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


class PlainEuler:
    """An Euler ODE step with no checks of its own (so the count is the loop's alone)."""

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        return x + (t_next - t) * model.velocity(x, t)


@pytest.mark.parametrize(
    "options",
    [{}, {"resample_every": 2}, {"ess_threshold": 0.5}, {"potential": "max"}, "lookahead"],
)
def test_fk_reads_the_device_once_per_potential_step(options):
    if options == "lookahead":
        options = {"potential": Lookahead(3, PlainEuler())}
    grid = [*np.linspace(0.0, 0.9, 6).tolist(), 1.0]
    fk = FKSampler(gmm(), LIN, transition=PlainEuler(), time_grid=grid, **options)
    state = fk.init(64, shape=(2,), generator=[gen(0), gen(1)], dtype=torch.float64)
    flags = [None] + [state.config.is_potential_step(k) for k in range(1, len(grid))]
    for k in range(1, len(grid)):
        with count_reads() as counts:
            state = fk.step(state)
        assert sum(counts.values()) == int(flags[k]), (k, counts)
        if flags[k]:
            assert counts == Counter(cpu=1)


@pytest.mark.parametrize(
    "transition",
    [Glass(), Glass(solver="euler"), SDE(), ODE()],
    ids=["glass-pc", "glass-euler", "sde", "ode"],
)
def test_fk_reads_the_device_once_per_potential_step_with_glass_core_transitions(transition):
    # the transition's own finite check is off (check=False): FK's one transfer covers it
    grid = [*np.linspace(0.0, 0.9, 6).tolist(), 1.0]
    fk = FKSampler(gmm(), LIN, transition=transition, time_grid=grid, resample_every=2)
    state = fk.init(16, shape=(2,), generator=gen(0), dtype=torch.float64)
    flags = [None] + [state.config.is_potential_step(k) for k in range(1, len(grid))]
    assert not all(flags[1:])  # both kinds of step are counted
    for k in range(1, len(grid)):
        with count_reads() as counts:
            state = fk.step(state)
        assert counts == (Counter(cpu=1) if flags[k] else Counter()), (k, counts)
    assert transition._replay is None  # the previous particles are not kept alive


@pytest.mark.parametrize("transition", [Glass(), SDE()], ids=["glass-pc", "sde"])
def test_unchecked_transitions_give_the_checked_bits(transition, monkeypatch):
    import glass_core.align.fk as fk_module

    def run():
        return fk_steering(
            gmm(), LIN, transition=transition, num_particles=16, time_grid=GRID, shape=(2,),
            generator=gen(3), lambda_=2.0, progress=False,
        )  # fmt: skip

    unchecked = run()
    monkeypatch.setattr(
        fk_module,
        "unchecked_step",
        lambda tr, model, x, t, t_next, noise, d: tr(model, x, t, t_next, noise, denoised=d),
    )
    checked = run()
    assert torch.equal(unchecked.samples, checked.samples)
    assert torch.equal(unchecked.log_weights, checked.log_weights)
    assert unchecked.log_evidence == checked.log_evidence


def test_quadratic_reward_moves_its_constant_once():
    reward = QuadraticReward([1.0, -1.0], 1.0)
    z = torch.zeros(3, 2, dtype=torch.float32)
    reward(z)
    first = reward._center.get(z.device, z.dtype)
    reward(z)
    assert reward._center.get(z.device, z.dtype) is first  # no new copy per call
    torch.testing.assert_close(reward(z), torch.full((3,), -1.0))


RANDOM = ("randn", "rand", "randint", "randperm", "normal", "multinomial", "bernoulli")


@contextlib.contextmanager
def record_draws():
    """Record (function, generator, device) of every torch random call."""
    calls = []
    originals = {name: getattr(torch, name) for name in RANDOM}

    def wrap(name, fn):
        def draw(*args, **kwargs):
            calls.append((name, kwargs.get("generator"), kwargs.get("device")))
            return fn(*args, **kwargs)

        return draw

    for name, fn in originals.items():
        setattr(torch, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


def _algorithms(generator):
    kw = dict(time_grid=GRID, shape=(2,), generator=generator, progress=False)
    model = gmm()
    yield lambda: fk_steering(model, LIN, transition=SDE(), num_particles=8, **kw)
    yield lambda: fk_steering(
        model, LIN, transition=Glass(), num_particles=8, potential="max", **kw
    )
    yield lambda: fk_steering(
        model, LIN, transition=Glass(inner_steps=2), num_particles=4, potential="lookahead", **kw
    )
    yield lambda: best_of_n(model, LIN, transition=SDE(), num_particles=8, **kw)
    yield lambda: reward_guidance(model, LIN, transition=ODE(), scale=0.5, num_particles=8, **kw)
    x = torch.zeros(2, 4, 2) if isinstance(generator, list) else torch.zeros(4, 2)
    yield lambda: value_estimate(model, LIN, x, 0.5, num_samples=3, generator=generator)


@pytest.mark.parametrize("generator", [gen(0), [gen(1), gen(2)]], ids=["single", "list"])
def test_every_random_draw_passes_its_generators_device(generator):
    gens = generator if isinstance(generator, list) else [generator]
    for run in _algorithms(generator):
        with record_draws() as calls:
            run()
        assert calls, "the algorithm drew nothing"
        for name, g, device in calls:
            assert any(g is h for h in gens), (name, g)  # never the global generator
            assert device is not None and torch.device(device) == g.device, (name, device)


class FakeDeviceGenerator(torch.Generator):
    """A CPU generator that reports another device (as a torch.Generator("cuda") would)."""

    @property
    def device(self):
        return torch.device("meta")


def test_draw_seeds_draws_on_the_generators_device(monkeypatch):
    seen = []
    real = torch.randint

    def randint(*args, generator=None, device=None, **kw):
        seen.append(device)
        return real(*args, generator=generator, **kw)  # the CPU stands in for the device

    monkeypatch.setattr(torch, "randint", randint)
    g = FakeDeviceGenerator()
    g.manual_seed(0)
    assert len(draw_seeds(g, 3)) == 3 and len(draw_seeds([g, g], 2)) == 2
    assert seen == [torch.device("meta")] * 3


class NaNModel:
    """The GMM, except that its `kind` ("denoise"/"velocity") calls at time `bad_t` return NaN
    in row 1."""

    def __init__(self, kind, bad_t):
        self.inner, self.kind, self.bad_t = gmm(), kind, bad_t
        self.schedule = self.inner.schedule

    def _out(self, kind, out, t):
        if kind == self.kind and float(t) == self.bad_t:
            out = out.clone()
            out[1] = float("nan")
        return out

    def denoise(self, x, t):
        return self._out("denoise", self.inner.denoise(x, t), t)

    def velocity(self, x, t):
        return self._out("velocity", self.inner.velocity(x, t), t)


class NaNStep(PlainEuler):
    """Returns NaN in row 2 on the step from t = GRID[1], from finite model outputs."""

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        out = super().__call__(model, x, t, t_next, generator, denoised=denoised)
        if t == GRID[1]:
            out = out.clone()
            out[2] = float("nan")
        return out

    def __repr__(self):
        return "NaNStep()"


def _run(model, transition, **kw):
    return fk_steering(
        model, LIN, transition=transition, num_particles=6, time_grid=GRID, shape=(2,),
        generator=gen(0), dtype=torch.float64, progress=False, **kw,
    )  # fmt: skip


def test_nan_particles_blame_the_party_at_fault():
    t1 = float(GRID[1])
    # the model inside the transition (the second transition's velocity call, replayed)
    with pytest.raises(ModelError, match=r"model returned NaN/inf at t=0.2 for rows \[1\] \(dur"):
        _run(NaNModel("velocity", t1), PlainEuler())
    # the denoiser output scored at the first potential step
    with pytest.raises(ModelError, match=r"at t_next=0.2|at t=0.2 for rows \[1\] \(the denoiser"):
        _run(NaNModel("denoise", t1), PlainEuler())
    # NaN made at a step without a potential is found at the next one, which names the rows
    with pytest.raises(ModelError, match=r"rows \[1\] at t=0.2 already"):
        _run(NaNModel("velocity", 0.0), PlainEuler(), resample_every=2)
    # the transition itself, from finite model outputs (its replay is NaN too)
    with pytest.raises(InvalidInputError, match=r"NaNStep\(\) produced NaN/inf in rows \[2\]"):
        _run(gmm(), NaNStep())
    # finite particles, NaN reward: the reward's fault as before
    with pytest.raises(RewardError):
        fk_steering(
            gmm(), lambda z: z[:, 0] / 0.0 * 0.0, transition=PlainEuler(), num_particles=6,
            time_grid=GRID, shape=(2,), generator=gen(0), progress=False,
        )  # fmt: skip


def test_the_blame_replay_forwards_the_models_other_attributes():
    """The replay that names the culprit wraps the model in a checking proxy; a transition that
    reads an attribute of the model besides denoise/velocity/schedule still finds it there, so
    the error blames the model as the step's first run would."""

    class SpeedEuler(PlainEuler):
        def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
            return x + (t_next - t) * model.speed * model.velocity(x, t)

    model = NaNModel("velocity", float(GRID[1]))
    model.speed = 1.0
    with pytest.raises(ModelError, match=r"model returned NaN/inf at t=0.2 for rows \[1\] \(dur"):
        _run(model, SpeedEuler())


class BrokenShortcut(PlainEuler):
    """Uses the D_t handed over by the last potential step (when there is one) and gets it wrong:
    NaN in row 2. Without it, a plain finite Euler step."""

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        if denoised is None:
            return super().__call__(model, x, t, t_next, generator)
        out = x + (t_next - t) * (denoised - x) / (1.0 - t)
        out[2] = float("nan")
        return out

    def __repr__(self):
        return "BrokenShortcut()"


class NaNHalfStep(PlainEuler):
    """A two-call step whose half step puts NaN into row 3 before the model's second call,
    on the step from t = GRID[1]."""

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        half = x + 0.5 * (t_next - t) * model.velocity(x, t)
        if t == GRID[1]:
            half[3] = float("nan")
        return x + (t_next - t) * model.velocity(half, t_next)


@pytest.mark.parametrize(
    ("transition", "error", "msg"),
    [
        (NaNStep, InvalidInputError, "NaNStep() produced NaN/inf in rows [2] {where} from finite "
         "model outputs: its parameters or the times are numerically out of range"),
        (BrokenShortcut, InvalidInputError, "BrokenShortcut() produced NaN/inf in rows [2] {where} "
         "from finite model outputs: its parameters or the times are numerically out of range"),
        (NaNHalfStep, InvalidInputError, "the transition fed the model NaN/inf in rows [3] at "
         "t=0.4 {where}: its parameters or the times are numerically out of range"),
    ],
    ids=["transition", "with-denoised", "fed-the-model"],
)  # fmt: skip
def test_the_replay_blames_the_transition_with_the_exact_message(transition, error, msg):
    """The replay re-runs the failed step as it ran (with the D_t the last potential step handed
    it) and the error says what went wrong, word for word."""
    where = "(during the transition t=0.2 -> t_next=0.4)"
    with pytest.raises(error) as err:
        _run(gmm(), transition())
    assert str(err.value) == msg.format(where=where)


class NaNOnce(NaNStep):
    """NaNStep on its first call from GRID[1] only: the replay of that step is finite."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        self.calls += t == GRID[1]
        if self.calls > 1:
            return PlainEuler.__call__(self, model, x, t, t_next, generator, denoised=denoised)
        return super().__call__(model, x, t, t_next, generator, denoised=denoised)


@pytest.mark.parametrize(
    ("transition", "seed"), [(NaNStep, None), (NaNOnce, 0)], ids=["global-rng", "once"]
)
def test_nan_particles_that_are_not_reproduced_are_named_with_the_step(transition, seed):
    """Without a generator to replay (the global RNG) or when the replay is finite, the error
    still names the particles' rows and the transition where they turned NaN."""
    msg = (
        r"^the particles hold NaN/inf in rows \[2\] \(during the transition t=0.2 -> t_next=0.4\)$"
    )
    with pytest.raises(ModelError, match=msg):
        fk_steering(
            gmm(), LIN, transition=transition(), num_particles=6, time_grid=GRID, shape=(2,),
            generator=None if seed is None else gen(seed), dtype=torch.float64, progress=False,
        )  # fmt: skip


def test_weighting_particles_proposed_outside_step_names_their_rows():
    """FKSampler's parts can be driven one by one: `weight` on NaN particles that `step` did not
    propose (no recorded start to replay) still names their rows and the step's transition."""
    fk = FKSampler(gmm(), LIN, transition=PlainEuler(), time_grid=GRID)
    state = fk.init(6, shape=(2,), generator=gen(0), dtype=torch.float64)
    state.particles = state.particles.clone()
    state.particles[[1, 4]] = float("nan")
    msg = r"^the particles hold NaN/inf in rows \[1, 4\] \(during the transition t=0.0 -> t_n"
    with pytest.raises(ModelError, match=msg):
        fk.weight(state, torch.zeros(6, dtype=torch.float64), 1, False)


class NoiseNaNModel:
    """The GMM, except that calls strictly between GRID[1] and GRID[2] return NaN in the rows
    whose first coordinate is positive: which rows depends on the step's noise. Records them."""

    def __init__(self):
        self.inner, self.bad_rows = gmm(), []
        self.schedule = self.inner.schedule

    def _out(self, out, x, t):
        if GRID[1] < float(t) < GRID[2]:
            bad = x[:, 0] > 0
            self.bad_rows.append(bad.nonzero().flatten().tolist())
            out = torch.where(bad[:, None], float("nan"), out)
        return out

    def denoise(self, x, t):
        return self._out(self.inner.denoise(x, t), x, t)

    def velocity(self, x, t):
        return self._out(self.inner.velocity(x, t), x, t)


def test_the_blamed_step_is_replayed_with_its_own_noise():
    """The re-run that names the culprit restores the failed step's noise: the model sees the
    same inputs again (an SDE step of two substeps draws noise before its second call), so the
    error names the rows that really failed."""
    model = NoiseNaNModel()
    with pytest.raises(ModelError, match=r"model returned NaN/inf at t=0\.3\d* for rows") as err:
        fk_steering(
            model, LIN, transition=SDE(substeps=2), num_particles=16, time_grid=GRID,
            shape=(2,), generator=gen(1), dtype=torch.float64, progress=False,
        )  # fmt: skip
    first, replayed = model.bad_rows
    assert 0 < len(first) < 16 and replayed == first
    assert f"for rows {first} (during" in str(err.value)


def test_ancestors_go_up_from_pinned_memory_without_blocking_on_cuda(monkeypatch):
    from glass_core.align.fk import upload_ancestors

    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append((a, k)) or self)
    upload_ancestors(np.arange(3), torch.device("cuda"))
    assert calls == ["pin", ((torch.device("cuda"),), {"non_blocking": True})]
    calls.clear()
    upload_ancestors(np.arange(3), torch.device("cpu"))  # nothing to pin on the host
    assert calls == [((torch.device("cpu"),), {})]


def test_finite_flag_is_a_float64_one_or_zero():
    from glass_core.align._finite import finite_flag

    ok, bad = torch.ones(2), torch.tensor([1.0, float("inf")])
    for tensors, want in (((ok, None), 1.0), ((ok, None, bad), 0.0)):
        flag = finite_flag(*tensors)
        assert flag.dtype == torch.float64 and flag.shape == () and float(flag) == want


def test_ancestors_are_uploaded_as_int64():
    from glass_core.align.fk import upload_ancestors

    for flat in (np.array([2, 0, 1], dtype=np.int32), [2, 0, 1]):
        idx = upload_ancestors(flat, torch.device("cpu"))
        assert idx.dtype == torch.int64 and idx.tolist() == [2, 0, 1]
