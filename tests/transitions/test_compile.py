"""Glass(compile=True): the inner loop with the network inside one fullgraph compiled graph,
equal to eager, reused across (t, t') pairs and grid steps, no graph break in an FK run."""

from __future__ import annotations

import pytest
import torch
from glass_core.align import fk_steering
from glass_core.errors import InvalidInputError
from glass_core.models import from_callable
from glass_core.schedules import Schedule
from glass_core.transitions import Glass
from glass_core.transitions.glass import SOLVERS

W = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) * 0.3


def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ W) - x * (1.0 - t[:, None])


def model():
    return from_callable(net, schedule=Schedule.rectified_flow(), prediction="velocity")


def test_compile_needs_a_tensor_time_model_and_a_bool():
    with pytest.raises(InvalidInputError, match="compile"):
        Glass(compile="yes")  # type: ignore[arg-type]

    class Plain:
        schedule = Schedule.rectified_flow()

        def denoise(self, x, t):
            return 0.5 * x

        def velocity(self, x, t):
            return x

    with pytest.raises(InvalidInputError, match="DenoiserBase"):
        Glass(0.4, 2, compile=True)(Plain(), torch.zeros(4, 8), 0.2, 0.5)
    from glass_core.transitions import compiled

    with pytest.raises(InvalidInputError, match=r"needs a DenoiserBase model .*, got Plain$"):
        compiled.network(Plain())


def test_compile_with_a_plain_model_names_the_models_type():
    class Plain:
        schedule = Schedule.rectified_flow()

        def denoise(self, x, t):
            return 0.5 * x

    with pytest.raises(InvalidInputError, match=r", got Plain$"):
        Glass(0.4, 2, compile=True)(Plain(), torch.zeros(4, 8), 0.2, 0.5)


@pytest.mark.slow
def test_compiled_fk_run_equals_eager_with_one_graph_and_no_graph_break():
    """A whole fk_steering run (4 grid steps, resampling at each, the last one to t' = 1):
    samples and log-weights within 1e-5 of eager, the same NFE, one compiled graph for all
    steps, and an empty graph-break counter."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    kwargs = dict(
        shape=(8,), num_particles=32, time_grid=[0.0, 0.25, 0.5, 0.75, 1.0], progress=False,
    )  # fmt: skip

    def run(compile: bool):
        return fk_steering(
            model(), lambda z: z.sum(dim=1), transition=Glass(0.4, 3, "euler", compile=compile),
            generator=torch.Generator().manual_seed(3), **kwargs,
        )  # fmt: skip

    eager, comp = run(False), run(True)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    assert comp.nfe == eager.nfe
    torch.testing.assert_close(comp.samples, eager.samples, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(comp.log_weights, eager.log_weights, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("given_denoised", [False, True])
@pytest.mark.parametrize("t_next", [0.7, 1.0], ids=["regular", "singular"])
@pytest.mark.parametrize("k", [3, 1])
def test_compiled_path_without_the_compiler_equals_eager(
    monkeypatch, solver, given_denoised, t_next, k
):
    """The compiled path's own code (point tables, plan tensors, the graph's body, call counts)
    run without torch.compile, so the fast suite checks it; the slow test above checks the
    compiler. Same noise, same samples as eager, the same NFE (two evaluations per step for
    Heun and midpoint, one fewer on a singular path to t' = 1), with D_t(x) given or not, for
    K = 3 and K = 1 inner steps (a singular Heun step is then only the multistep last step). The
    compiler is asked for the whole body as one graph (fullgraph: a graph break raises instead
    of splitting the loop) with static shapes (dynamic=False: CUDA-graph capturable)."""
    from glass_core.transitions import compiled

    asked = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: asked.append((fn, options)) or fn)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    m = model()
    denoised = m.denoise(x, 0.3) if given_denoised else None

    class Counted:  # a user's wrapper: the compiled path adds its graph's calls to `nfe`
        def __init__(self):
            self._model, self.schedule, self.nfe = m, m.schedule, 0

        def denoise(self, x, t):
            self.nfe += 1
            return self._model.denoise(x, t)

    def step(compile: bool) -> tuple[torch.Tensor, int]:
        counted = Counted()
        out = Glass("ddpm", k, solver, compile=compile)(
            counted, x, 0.3, t_next, torch.Generator().manual_seed(5), denoised=denoised
        )
        return out, counted.nfe

    (eager, eager_nfe), (comp, comp_nfe) = step(False), step(True)
    assert asked == [(compiled._integrate, {"fullgraph": True, "dynamic": False})]
    assert comp_nfe == eager_nfe
    torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-6)


WT = torch.randn(1, 8, generator=torch.Generator().manual_seed(4))


def bf16_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A network with a float32 time embedding (t must come in x's dtype) computing in bf16."""
    return (torch.tanh(x @ W + t[:, None] @ WT) - x).to(torch.bfloat16)


class Labelled:
    """A user's wrapper that copies its model's `prediction` but has no `predict` of its own."""

    def __init__(self, m):
        self._model, self.schedule, self.prediction = m, m.schedule, m.prediction

    def denoise(self, x, t):
        return self._model.denoise(x, t)


@pytest.mark.parametrize(
    "case", ["sigma0", "bf16 network", "labelled wrapper", "float64 particles"]
)
def test_compiled_path_equals_eager_beyond_the_defaults(monkeypatch, case):
    """The compiled path (run without the compiler) gives eager's step for a sigma0 other than 1,
    a network that wants its times in the input's dtype and returns bf16, a wrapper that carries
    `prediction` but no `predict` (the network is the model inside it), and float64 particles
    (to float64 rounding: the graph's coefficients are float64 too)."""
    from glass_core.transitions import compiled

    monkeypatch.setattr(compiled, "compile_integrate", lambda: compiled._integrate)
    m = model()
    if case == "bf16 network":
        m = from_callable(bf16_net, schedule=Schedule.rectified_flow(), prediction="velocity")
    if case == "labelled wrapper":
        m = Labelled(m)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    tol = 1e-6
    if case == "float64 particles":
        x, tol = x.double(), 1e-13
        m = from_callable(
            lambda x, t: torch.tanh(x @ W.double()) - x * (1.0 - t[:, None]),
            schedule=Schedule.rectified_flow(),
            prediction="velocity",
        )

    def step(compile: bool) -> torch.Tensor:
        tr = Glass(0.4, 3, "pc", sigma0=2.0 if case == "sigma0" else 1.0, compile=compile)
        return tr(m, x, 0.3, 0.8, torch.Generator().manual_seed(5))

    torch.testing.assert_close(step(True), step(False), rtol=tol, atol=tol)


@pytest.mark.parametrize("compile", [False, True])
def test_a_float64_denoised_is_taken_in_the_working_dtype(monkeypatch, compile):
    """A `denoised` given in float64 for float32 particles is rounded to float32 first: the step
    is bit for bit the one from that rounding, eager or compiled."""
    from glass_core.transitions import compiled

    monkeypatch.setattr(compiled, "compile_integrate", lambda: compiled._integrate)
    m = model()
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    d64 = m.denoise(x, 0.3).double() + 1e-4 * torch.randn(
        16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )

    def step(denoised: torch.Tensor) -> torch.Tensor:
        tr = Glass(0.4, 3, "pc", compile=compile)
        return tr(m, x, 0.3, 0.8, torch.Generator().manual_seed(5), denoised=denoised)

    assert torch.equal(step(d64), step(d64.float()))


@pytest.mark.parametrize("solver", ["euler", "pc"])
def test_compiled_calls_add_to_the_counters_of_a_whole_run(monkeypatch, solver):
    """The graph's network calls are added to the counters the wrappers already hold: over the
    grid of a best_of_n run (one counted model for every step) and over two calls of a user's
    wrapper, the NFE equals eager's (run without torch.compile, as above)."""
    from glass_core.align import best_of_n
    from glass_core.transitions import compiled

    monkeypatch.setattr(compiled, "compile_integrate", lambda: compiled._integrate)
    kw = dict(shape=(8,), num_particles=4, time_grid=[0.0, 0.3, 0.6, 1.0], progress=False)

    def run(compile: bool):
        return best_of_n(
            model(), lambda z: z.sum(dim=1), transition=Glass(0.4, 3, solver, compile=compile),
            generator=torch.Generator().manual_seed(2), **kw,
        )  # fmt: skip

    eager, comp = run(False), run(True)
    assert comp.nfe == eager.nfe == 3 * Glass(0.4, 3, solver).nfe_per_call
    torch.testing.assert_close(comp.samples, eager.samples, rtol=1e-6, atol=1e-6)

    class Counted:  # a user's wrapper with a plain counter
        def __init__(self):
            self._model, self.schedule, self.nfe = model(), model().schedule, 0

        def denoise(self, x, t):
            self.nfe += 1
            return self._model.denoise(x, t)

    counted, x = Counted(), torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    tr = Glass(0.4, 3, solver, compile=True)
    for t, t_next in [(0.3, 0.6), (0.6, 0.9)]:
        x = tr(counted, x, t, t_next, torch.Generator().manual_seed(5))
    assert counted.nfe == 2 * tr.nfe_per_call


def test_count_calls_adds_once_to_each_meter_and_to_plain_counters():
    """The graph's calls go once to every meter down the wrapper chain (a meter two wrappers
    share counts them once) and to a user's wrapper's plain `nfe`."""
    from types import SimpleNamespace

    from glass_core.meter import Meter
    from glass_core.transitions import compiled

    shared, own = Meter(), Meter()
    base = SimpleNamespace(meter=own, _model=None)
    inner = SimpleNamespace(meter=shared, _model=base)
    user = SimpleNamespace(nfe=1, _model=inner)
    outer = SimpleNamespace(meter=shared, _model=user)
    compiled.count_calls(outer, 3)
    assert (shared.evaluations, own.evaluations, user.nfe) == (3, 3, 4)


def test_compiled_path_equals_eager_for_an_epsilon_model_below_the_noise_floor(monkeypatch):
    """An epsilon model is blind at alpha = 0, so below the noise floor (t < ~1e-3 on rectified
    flow) it is asked at the floor: from t = 5e-4 the compiled path gives eager's step (its
    start's D_t comes from outside the graph, its inner points lie above the floor)."""
    from glass_core.transitions import compiled

    monkeypatch.setattr(compiled, "compile_integrate", lambda: compiled._integrate)
    eps = from_callable(net, schedule=Schedule.rectified_flow(), prediction="epsilon")
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))

    def step(compile: bool) -> torch.Tensor:
        tr = Glass(0.4, 3, "euler", compile=compile)
        return tr(eps, x, 5e-4, 0.5, torch.Generator().manual_seed(5))

    torch.testing.assert_close(step(True), step(False), rtol=1e-6, atol=1e-6)


def test_compiled_path_on_bf16_particles_is_the_float32_step_rounded_once(monkeypatch):
    """bf16 particles: the compiled step works in float32 (the working dtype) and rounds once at
    the end, so each output is within half a bf16 step (the final rounding) plus 2e-3 (the
    network's bf16 inputs; measured 6e-4) of the float32 particles' step with the same noise;
    a step computed in bf16 is off by a whole step (8e-3 here) in places."""
    from glass_core.transitions import compiled

    monkeypatch.setattr(compiled, "compile_integrate", lambda: compiled._integrate)

    def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) - x * (1.0 - t.to(x.dtype)[:, None])

    m = from_callable(plain, schedule=Schedule.rectified_flow(), prediction="velocity")
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)

    def step(x: torch.Tensor) -> torch.Tensor:
        tr = Glass(0.4, 3, "euler", compile=True)
        return tr(m, x, 0.3, 0.8, torch.Generator().manual_seed(5))

    got, ref = step(x), step(x.float())  # bf16 noise is drawn in float32: the same draws
    assert got.dtype == torch.bfloat16
    bf16_step = torch.exp2(torch.floor(torch.log2(ref.abs())) - 7)
    assert bool(((got.float() - ref).abs() <= 0.5 * bf16_step + 2e-3).all())
