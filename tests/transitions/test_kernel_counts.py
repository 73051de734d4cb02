"""GPU discipline of the transitions (issue 21), checked on CPU with deterministic counts: kernels
per NFE outside the model (benches/kernel_counts.py), no host read inside a transition (run on
the meta device, where any read raises), and the deferred finite check."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch
from glass_core.errors import InvalidInputError, ModelError
from glass_core.models import from_callable
from glass_core.schedules import Schedule
from glass_core.transitions import ODE, SDE, Glass

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))
import kernel_counts

TRANSITIONS = [
    Glass(0.4, 3, "pc"),
    Glass(0.4, 3, "euler"),
    Glass("ddpm", 3, "heun"),
    Glass(0.4, 3, "midpoint"),
    Glass(0.4, 3, "multistep"),
    ODE("euler", 3),
    ODE("heun", 3),
    ODE("pc", 3),
    SDE(3),
]


@pytest.mark.parametrize("name", list(kernel_counts.BOUNDS))
def test_kernels_per_nfe_outside_the_model(name):
    """ODE euler <= 3, SDE <= 6, GLASS euler <= 6, GLASS pc <= 9 (measured 2, 5, 4.8, 7.8; 14,
    17, 13, 17 before, with 8 per NFE spent on per-call finite checks)."""
    k = kernel_counts.kernels_per_nfe(kernel_counts._transitions()[name], n=64)
    assert k <= kernel_counts.BOUNDS[name], f"{name}: {k} kernels per NFE"


@pytest.mark.parametrize("solver", ["pc", "euler", "multistep", "midpoint"])
def test_peak_extra_memory_of_a_glass_transition(solver):
    """At most 3 particle-sized tensors over the model's own (pc keeps y^c, z_m and the model
    input; it held 5 before)."""
    extra = kernel_counts.peak_extra_particles(Glass(0.4, 10, solver), n=256)
    assert extra <= 3.0, f"{solver}: {extra:.2f} particle tensors"


def half(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * x


@pytest.mark.parametrize("tr", TRANSITIONS, ids=repr)
@pytest.mark.parametrize("t_next", [0.7, 1.0])
def test_no_host_read_inside_a_transition(tr, t_next):
    """On the meta device every host read (item, bool, tolist, numpy) raises: with check=False a
    transition runs there end to end, noise from a CPU generator included."""
    model = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    x = torch.empty(8, 4, device="meta")
    out = tr(model, x, 0.2, t_next, torch.Generator().manual_seed(0), check=False)
    assert out.device.type == "meta" and out.shape == x.shape
    assert tr.last_finite is not None and tr.last_finite.shape == ()
    d = torch.empty(8, 4, device="meta")
    tr(model, x, 0.0, t_next, None, denoised=d, check=False)


@pytest.mark.parametrize("solver", ["euler", "pc"])
def test_no_host_read_inside_a_compiled_transition(solver, monkeypatch):
    """The compiled path (its body run without torch.compile) on the meta device, where every
    host read raises: it reads nothing back either, and hands the network its times on the
    particles' device."""
    from glass_core.transitions import compiled

    monkeypatch.setattr(compiled, "compile_integrate", lambda: compiled._integrate)
    model = from_callable(
        lambda x, t: x * t[:, None], schedule=Schedule.rectified_flow(), prediction="x1"
    )
    x = torch.empty(8, 4, device="meta")
    tr = Glass(0.4, 3, solver, compile=True)
    out = tr(model, x, 0.2, 0.7, torch.Generator().manual_seed(0), check=False)
    assert out.device.type == "meta" and out.shape == x.shape


def nan_rows(rows: list[int]):
    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = 0.5 * x
        out[rows] = float("nan")
        return out

    return from_callable(fn, schedule=Schedule.rectified_flow(), prediction="x1")


@pytest.mark.parametrize("tr", TRANSITIONS, ids=repr)
def test_deferred_check_flags_and_explains_a_failure(tr):
    """check=False returns without reading the flag; `last_finite` says False and
    `raise_nonfinite` re-runs the call with per-call checks to blame the model, naming rows."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    out = tr(nan_rows([1, 4]), x, 0.2, 0.6, torch.Generator().manual_seed(1), check=False)
    assert not bool(tr.last_finite) and not torch.isfinite(out).all()
    with pytest.raises(ModelError, match=r"t=0\.2 for rows \[1, 4\]"):
        tr.raise_nonfinite()
    good = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    tr(good, x, 0.2, 0.6, torch.Generator().manual_seed(1), check=False)
    assert bool(tr.last_finite)


@pytest.mark.parametrize("tr", TRANSITIONS, ids=repr)
def test_a_given_nonfinite_denoised_is_blamed_on_the_model(tr):
    """The caller's D_t(x) (`denoised=`, the model's output at the step's start) holding NaN in
    some rows: the explanation blames the model at t for those rows, as if it had been called."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    good = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    denoised = good.denoise(x, 0.2)
    denoised[[2, 5]] = float("nan")
    out = tr(good, x, 0.2, 0.6, torch.Generator().manual_seed(1), check=False, denoised=denoised)
    assert not bool(tr.last_finite) and not torch.isfinite(out).all()
    with pytest.raises(
        ModelError, match=r"^the model returned NaN/inf at t=0\.2 for rows \[2, 5\]"
    ):
        tr.raise_nonfinite()


@pytest.mark.parametrize("as_list", [False, True], ids=["generator", "list"])
def test_replay_uses_the_same_noise(as_list):
    """A failure that depends on the noise is reproduced: the model fails only in the row whose
    input is largest, which for x = 0 is the row where the transition's noise is largest (a
    torch.Generator, or a list of them: one group here)."""
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    bad_row = int(eps.abs().amax(1).argmax())

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rowmax = x.abs().amax(1, keepdim=True)
        big = (rowmax >= 0.999 * rowmax.max()) & (rowmax.max() > 0)
        return torch.where(big, torch.full_like(x, float("nan")), 0.5 * x)

    model = from_callable(fn, schedule=Schedule.rectified_flow(), prediction="x1")
    tr = Glass(0.4, 2, "euler")
    gen = torch.Generator().manual_seed(1)
    tr(model, torch.zeros(5, 3), 0.2, 0.6, [gen] if as_list else gen, check=False)
    assert not bool(tr.last_finite)
    with pytest.raises(ModelError, match=rf"for rows \[{bad_row}\]"):
        tr.raise_nonfinite()
    # two groups, two generators: the replay draws each group's noise from its own again
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    out = tr(model, torch.zeros(6, 3), 0.2, 0.6, gens, check=False)
    bad = torch.nonzero(~torch.isfinite(out).all(dim=1)).flatten().tolist()
    assert len(bad) == 1
    with pytest.raises(ModelError, match=rf"for rows \[{bad[0]}\]"):
        tr.raise_nonfinite()


def test_a_failure_the_checked_rerun_does_not_reproduce_is_reported_as_such():
    """A model that returns NaN on its first call only: the checked re-run is finite, so the error
    says the failure was not reproduced instead of blaming rows of a finite re-run."""
    calls: list[int] = []

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return 0.5 * x * (float("nan") if len(calls) == 1 else 1.0)

    model = from_callable(fn, schedule=Schedule.rectified_flow(), prediction="x1")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    msg = (
        r"^ODE\(solver='euler', substeps=1\) produced NaN/inf during the transition t=0\.2 -> "
        r"t_next=0\.6; a re-run with per-call checks did not reproduce it \(its noise could not "
        r"be replayed\)$"
    )
    with pytest.raises(InvalidInputError, match=msg):
        ODE("euler", 1)(model, x, 0.2, 0.6, None)
    assert len(calls) == 2


def needs_a_call(tr):
    return rf"^{re.escape(repr(tr))}: raise_nonfinite needs a call with check=False$"


@pytest.mark.parametrize("tr", TRANSITIONS, ids=repr)
def test_raise_nonfinite_needs_a_deferred_call(tr):
    """Nothing to explain before a check=False call, nor twice for one call (the replay is
    dropped once used), nor after a checked call (which keeps no replay)."""
    fresh = type(tr)()
    with pytest.raises(InvalidInputError, match=needs_a_call(fresh)):
        fresh.raise_nonfinite()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    tr(nan_rows([1]), x, 0.2, 0.6, torch.Generator().manual_seed(1), check=False)
    with pytest.raises(ModelError):
        tr.raise_nonfinite()
    with pytest.raises(InvalidInputError, match=needs_a_call(tr)):
        tr.raise_nonfinite()
    good = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    tr(good, x, 0.2, 0.6, torch.Generator().manual_seed(1))
    with pytest.raises(InvalidInputError, match=needs_a_call(tr)):
        tr.raise_nonfinite()


class _Overflowing(ODE):
    """An ODE whose float64 scalar coefficient math overflows."""

    def _step(self, model, x, t, t_next, generator, denoised):
        return x * math.exp(1e4)


def test_scalar_overflow_names_the_transition_and_the_step():
    """Python float math raising (OverflowError, ZeroDivisionError) in a step is the
    transition's parameters or times out of range: a typed error naming both."""
    model = from_callable(lambda x, t: x, schedule=Schedule.rectified_flow(), prediction="x1")
    msg = (
        r"^ODE\(solver='euler', substeps=1\): the transition t=0\.2 -> t_next=0\.5 is "
        r"numerically out of range \(math range error\)$"
    )
    with pytest.raises(InvalidInputError, match=msg):
        _Overflowing()(model, torch.randn(4, 2), 0.2, 0.5)


def test_update_launches_one_kernel_per_term_that_changes_y():
    """update_ (y <- keep y + sum c_i v_i, the solvers' in-place step) skips a keep of 1.0 and
    zero or absent terms: no kernel for them, and the same y as the full formula."""
    from glass_core.transitions.solvers import update_

    g = torch.Generator().manual_seed(0)
    y0, v, w = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(3))
    half = torch.tensor(0.5, dtype=torch.float64)
    cases = [  # (keep, terms, expected, kernels)
        (1.0, [(0.0, v), (2.0, None)], y0, 0),
        (1.0, [(2.0, v)], y0 + 2.0 * v, 1),
        (0.5, [(2.0, v), (0.0, w)], 0.5 * y0 + 2.0 * v, 2),
        (half, [(half, v), (-1.0, w)], 0.5 * y0 + 0.5 * v - w, 3),  # a tensor is never skipped
    ]
    for keep, terms, expected, kernels in cases:
        y = y0.clone()
        with kernel_counts.KernelCounter() as counter:
            out = update_(y, keep, terms)
        assert out is y
        torch.testing.assert_close(y, expected, rtol=1e-15, atol=1e-15)
        assert counter.counts.kernels == kernels, (keep, counter.ops)


def test_lincomb_runs_one_kernel_per_term_and_fuses_a_leading_one():
    """sum_i c_i v_i costs one kernel per live term, except that a leading 1.0 fuses with the next
    float term into one add-with-alpha (so x + h u is one kernel, the common Euler update)."""
    from glass_core.transitions.solvers import lincomb

    a, b, c = (torch.ones(4) for _ in range(3))
    half = torch.tensor(0.5)
    cases = [
        ([(1.0, a), (2.5, b)], 1),
        ([(1.0, a), (2.5, b), (-0.5, c)], 2),
        ([(2.0, a), (0.5, b)], 2),
        ([(1.0, a), (half, b)], 2),  # a tensor coefficient is not fused
        ([(0.0, a), (3.0, b), (0.0, c)], 1),
    ]
    for terms, kernels in cases:
        with kernel_counts.KernelCounter() as counter:
            lincomb(terms)
        assert counter.counts.kernels == kernels, (terms, counter.ops)


def test_the_checked_rerun_records_only_row_outputs():
    """The checked re-run records which rows are finite for outputs with rows; anything else (a
    0-d tensor, a non-tensor) is handed back unrecorded, for the transition's own checks."""
    import numpy as np
    from glass_core.transitions.base import CheckedModel

    model = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    checked, x = CheckedModel(model), torch.zeros(3, 2)
    scalar, array = torch.tensor(1.0), np.zeros(3)
    assert checked.record(scalar, 0.5, x) is scalar and checked.record(array, 0.5, x) is array
    assert checked._calls == []
    checked.record(torch.zeros(3, 2), 0.5, x)
    assert len(checked._calls) == 1


def test_tensor_coefficients_are_applied_on_the_device_without_a_host_read():
    """A 0-d tensor coefficient (the compiled path's, device-side on a GPU) enters lincomb and
    update_ as a tensor operand, never as a Python number read back from it: on the meta device,
    where any read raises, both run with coefficients there too."""
    from glass_core.transitions.solvers import lincomb, update_

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    c = torch.tensor(0.5, device="meta")
    for terms in ([(1.0, meta(4)), (c, meta(4))], [(c, meta(4)), (c, meta(4)), (2.0, meta(4))]):
        out = lincomb(terms)
        assert out.device.type == "meta" and out.shape == (4,)
    y = meta(4)
    assert update_(y, c, [(c, meta(4)), (2.0, meta(4))]) is y


def test_a_step_whose_weights_sum_to_one_is_one_lerp():
    """ODE's Euler blend keep y + gain D is one lerp kernel where keep + gain = 1 (every
    rectified-flow step: y + h (D - y)/(1 - t)), bit for bit torch.lerp; other weights take the
    general two-term sum."""
    from glass_core.transitions.ode import _blend

    g = torch.Generator().manual_seed(0)
    y, d = (torch.randn(64, generator=g, dtype=torch.float64) for _ in range(2))
    with kernel_counts.KernelCounter() as counter:
        out = _blend(y, 0.7, d, 0.3)
    assert counter.counts.kernels == 1, counter.ops
    assert torch.equal(out, torch.lerp(y, d, 0.3))
    torch.testing.assert_close(_blend(y, 0.5, d, 0.3), 0.5 * y + 0.3 * d, rtol=1e-15, atol=1e-15)


class _Scripted(ODE):
    """A step that asks the model at the rows' start (`fed`: none, finite, or NaN in row 2) and
    returns x with NaN in `bad_out`: the transition's own failure, from finite model outputs
    unless it fed the model NaN."""

    def __init__(self, fed: str, bad_out: list[int]) -> None:
        super().__init__()
        self.fed, self.bad_out = fed, bad_out

    def _step(self, model, x, t, t_next, generator, denoised):
        if self.fed != "none":
            inp = x.clone()
            if self.fed == "nan":
                inp[2] = float("nan")
            model.denoise(x, t)
            model.denoise(inp, t)
        out = x.clone()
        out[self.bad_out] = float("nan")
        return out


@pytest.mark.parametrize(
    ("fed", "bad_out", "rows"),
    [("none", [1, 3], "[1, 3]"), ("finite", [1, 3], "[1, 3]"), ("nan", [0, 2], "[2]")],
)
@pytest.mark.parametrize("check", [True, False])
def test_a_transitions_own_nan_is_blamed_on_it_naming_the_rows_and_the_step(
    fed, bad_out, rows, check
):
    """NaN the transition made from finite model outputs (with no model call at all, or after
    finite ones) names the rows of its result; NaN it fed the model names the rows of that
    input. The message names the transition and its step, checked at once or deferred."""
    model = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    tr = _Scripted(fed, bad_out)
    msg = (
        rf"^{re.escape(repr(tr))} produced NaN/inf in rows {re.escape(rows)} \(during the "
        r"transition t=0\.25 -> t_next=0\.75\) from finite model outputs: its parameters or the "
        r"times are numerically out of range$"
    )
    with pytest.raises(InvalidInputError, match=msg):
        tr(model, x, 0.25, 0.75, check=check)
        tr.raise_nonfinite()


def test_nonfinite_rows_are_listed_up_to_the_limit_without_a_count():
    """Exactly `limit` bad rows are listed alone; one more adds the count of those left out."""
    from glass_core.transitions.base import listed_rows

    ok = torch.ones(12, dtype=torch.bool)
    ok[:10] = False
    assert listed_rows(ok) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    ok[10] = False
    assert listed_rows(ok) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and 1 more"


def test_a_model_failure_on_one_number_per_row_is_blamed_on_the_model():
    """Particles [B] (one number per row) are rows too: the re-run records the model's 1-D
    outputs and blames it for its NaN rows."""
    x = torch.randn(6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelError, match=r"t=0\.2 for rows \[1, 4\]"):
        Glass(0.4, 3, "euler")(nan_rows([1, 4]), x, 0.2, 0.6, torch.Generator().manual_seed(1))


class _Doubling(ODE):
    """x_t' = 2 D_t(x): overflows where D_t(x) is finite but above half the float32 range."""

    def _step(self, model, x, t, t_next, generator, denoised):
        return 2.0 * (denoised if denoised is not None else model.denoise(x, t))


def test_the_rerun_replays_the_given_denoised():
    """The re-run that explains a deferred failure steps from the caller's `denoised` again (not
    from a fresh model call, which here would step without overflow): it finds the transition's
    overflow in row 1."""
    model = from_callable(half, schedule=Schedule.rectified_flow(), prediction="x1")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    denoised = model.denoise(x, 0.2)
    denoised[1] = 3e38
    tr = _Doubling()
    tr(model, x, 0.2, 0.6, denoised=denoised, check=False)
    with pytest.raises(InvalidInputError, match=r"produced NaN/inf in rows \[1\] \(during"):
        tr.raise_nonfinite()
