"""Denoiser protocol, parameterisation conversions, from_callable, micro-batching, seeded noise."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from glass_core import _random
from glass_core.errors import InvalidInputError
from glass_core.models import (
    PREDICTIONS,
    Denoiser,
    GaussianMixture,
    conversion_coefficients,
    convert,
    from_callable,
)
from glass_core.schedules import VP, Cosine, RectifiedFlow, shifted


def schedules():
    return {
        "rf": RectifiedFlow(),
        "cosine": Cosine(),
        "vp_sd": VP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
        "rf_shift3": shifted(RectifiedFlow(), 3.0),
    }


SCHEDULES = list(schedules())


def gmm(schedule, d=2):
    g = torch.Generator().manual_seed(0)
    means = 2 * torch.randn(3, d, generator=g, dtype=torch.float64)
    return GaussianMixture(
        means, torch.tensor([0.3, 0.5, 0.7]), torch.tensor([0.2, 0.5, 0.3]), schedule
    )


def exact_prediction(model: GaussianMixture, x, t, kind):
    """Model outputs written out independently from docs/math.md §1 (not via `convert`)."""
    s = model.schedule
    a, sg, da, ds = s.alpha(t), s.sigma(t), s.d_alpha(t), s.d_sigma(t)
    d = model.denoise(x, t)
    eps = (x - a * d) / sg
    return {
        "x1": d,
        "epsilon": eps,
        "velocity": (ds / sg) * x + (da - a * ds / sg) * d,  # eq. 26
        "v": a * eps - sg * d,
        "score": (a * d - x) / sg**2,
    }[kind]


@pytest.mark.parametrize("name", SCHEDULES)
def test_conversions_round_trip_every_pair(name):
    sched = schedules()[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 4, generator=g, dtype=torch.float64)
    p = torch.randn(64, 3, 4, generator=g, dtype=torch.float64)
    for t in (0.05, 0.3, 0.5, 0.77, 0.95):
        for src, dst in itertools.permutations(PREDICTIONS, 2):
            q = convert(p, x, t, sched, source=src, target=dst)
            back = convert(q, x, t, sched, source=dst, target=src)
            torch.testing.assert_close(back, p, rtol=1e-9, atol=1e-9, msg=f"{src}->{dst} at t={t}")


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_from_callable_recovers_denoiser_and_velocity(name, kind):
    """A model that outputs `kind` (computed from the exact GMM) gives back the exact D and u."""
    model = gmm(schedules()[name])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 2, generator=g, dtype=torch.float64)
    ts = torch.rand(50, generator=g, dtype=torch.float64) * 0.9 + 0.05

    def fn(xx, tt):
        assert tt.shape == (xx.shape[0],)
        return torch.stack(
            [
                exact_prediction(model, xx[i : i + 1], float(tt[i]), kind)[0]
                for i in range(xx.shape[0])
            ]
        )

    wrapped = from_callable(fn, prediction=kind, schedule=model.schedule)
    assert isinstance(wrapped, Denoiser)
    torch.testing.assert_close(wrapped.denoise(x, ts), model.denoise(x, ts), rtol=1e-8, atol=1e-8)
    u_exact = torch.stack(
        [exact_prediction(model, x[i : i + 1], float(ts[i]), "velocity")[0] for i in range(50)]
    )
    torch.testing.assert_close(wrapped.velocity(x, ts), u_exact, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["rf", "cosine"])
def test_score_and_v_are_the_mixtures_closed_forms(name):
    """score = grad log p_t = (alpha D - x) / sigma^2, checked against autograd of the mixture's
    exact marginal density; v = alpha eps - sigma D with eps = (x - alpha D) / sigma (docs/math.md
    §1). Per-row times; float64 throughout, so the two routes agree to rounding."""
    model = gmm(schedules()[name])
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 2, generator=g, dtype=torch.float64)
    ts = torch.rand(40, generator=g, dtype=torch.float64) * 0.9 + 0.05
    a = torch.tensor([model.schedule.alpha(float(t)) for t in ts], dtype=torch.float64)[:, None]
    s = torch.tensor([model.schedule.sigma(float(t)) for t in ts], dtype=torch.float64)[:, None]
    d = model.denoise(x, ts)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.marginal_log_prob(xg, ts).sum(), xg)
    score = model.score(x, ts)
    torch.testing.assert_close(score, grad, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(score, (a * d - x) / s**2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.v(x, ts), a * (x - a * d) / s - s * d, rtol=1e-10, atol=1e-10)


def test_velocity_model_at_t0_and_epsilon_singularity():
    sched = RectifiedFlow()
    model = gmm(sched)
    x = torch.randn(8, 2, dtype=torch.float64)
    # velocity prediction determines D at t=0 (alpha=0): D_0 = E[z]
    u = from_callable(lambda xx, tt: model.velocity(xx, 0.0), prediction="velocity", schedule=sched)
    torch.testing.assert_close(u.denoise(x, 0.0), model.mean().expand(8, 2), rtol=1e-10, atol=1e-10)
    # an epsilon prediction does not determine D at alpha=0: the raw conversion refuses, and a
    # model is asked at the noise floor instead (query_time), whatever the sampler asks for
    with pytest.raises(InvalidInputError, match="epsilon"):
        conversion_coefficients(sched, 0.0, "epsilon", "x1")
    seen = []

    def eps_fn(xx, tt):
        seen.append(tt)
        return model.epsilon(xx, tt)

    eps = from_callable(eps_fn, prediction="epsilon", schedule=sched)
    d0 = eps.denoise(x, 0.0)
    t_floor = float(seen[0][0])
    assert sched.alpha(t_floor) / sched.sigma(t_floor) == pytest.approx(1e-3, rel=1e-9)
    torch.testing.assert_close(d0, model.denoise(x, t_floor), rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidInputError, match="x1"):
        conversion_coefficients(sched, 1.0, "x1", "velocity")


def test_per_row_times_match_scalar_times():
    model = gmm(Cosine())
    x = torch.randn(6, 2, dtype=torch.float64)
    ts = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    rows = torch.cat([model.velocity(x[i : i + 1], float(ts[i])) for i in range(6)])
    torch.testing.assert_close(model.velocity(x, ts), rows, rtol=1e-12, atol=1e-12)
    # numpy per-row times (any float dtype) are the same times
    assert torch.equal(model.velocity(x, ts.numpy()), model.velocity(x, ts))
    t32 = ts.numpy().astype(np.float32)
    assert torch.equal(model.velocity(x, t32), model.velocity(x, torch.from_numpy(t32)))


def test_a_subclass_predicts_x1_by_default() -> None:
    from glass_core.models import DenoiserBase

    class Halves(DenoiserBase):
        def predict(self, x, t):
            return 0.5 * x

    model = Halves(RectifiedFlow())
    assert model.prediction == "x1" and model.max_batch is None
    x = torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(model.denoise(x, 0.3), 0.5 * x)


@pytest.mark.parametrize("target", ["velocity", "x1", "v", "score"])
def test_a_prediction_asked_at_its_own_time_is_converted_once(target: str) -> None:
    """Where the model is asked at t itself, its output goes to the target in one conversion
    (not through x1 and back, which loses precision where alpha is small)."""
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(4, 8, generator=g)
    model = from_callable(lambda x, t: noise[: len(x)], prediction="epsilon", schedule=Cosine())
    x = torch.randn(4, 8, generator=g)
    t = 0.02  # inside the noise floor: queried at t itself
    assert model.schedule.t_from_log_snr(-13.8) < t
    want = convert(noise, x, t, model.schedule, source="epsilon", target=target)
    assert torch.equal(model.as_prediction(x, t, target), want)


def test_max_batch_micro_batches_transparently():
    calls = []
    sched = RectifiedFlow()
    model = gmm(sched)

    def fn(xx, tt):
        calls.append(xx.shape[0])
        return model.denoise(xx, tt)

    wrapped = from_callable(fn, prediction="x1", schedule=sched, max_batch=4)
    x = torch.randn(10, 2, dtype=torch.float64)
    torch.testing.assert_close(wrapped.velocity(x, 0.4), model.velocity(x, 0.4))
    assert calls == [4, 4, 2]


def test_dtypes_shapes_and_grad():
    sched = RectifiedFlow()
    model = gmm(sched, d=12)
    fn = from_callable(
        lambda xx, tt: model.denoise(xx.reshape(len(xx), -1), tt).reshape(xx.shape),
        prediction="x1",
        schedule=sched,
    )
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randn(5, 3, 2, 2).to(dtype)
        u = fn.velocity(x, 0.3)
        assert u.shape == x.shape and u.dtype == dtype and torch.isfinite(u).all()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    fn.velocity(x, 0.3).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_inputs_name_the_argument():
    sched = RectifiedFlow()
    ok = from_callable(lambda x, t: x, prediction="x1", schedule=sched)
    x = torch.zeros(3, 2)
    with pytest.raises(InvalidInputError, match="prediction"):
        from_callable(lambda x, t: x, prediction="eps", schedule=sched)
    with pytest.raises(InvalidInputError, match="max_batch"):
        from_callable(lambda x, t: x, prediction="x1", schedule=sched, max_batch=0)
    with pytest.raises(InvalidInputError, match="t must"):
        ok.denoise(x, 1.5)
    with pytest.raises(InvalidInputError, match="t must"):
        ok.denoise(x, float("nan"))
    with pytest.raises(InvalidInputError, match="t must"):
        ok.denoise(x, torch.zeros(2))
    with pytest.raises(InvalidInputError, match="x must"):
        ok.denoise(torch.zeros(3, 2, dtype=torch.int64), 0.5)
    bad = from_callable(lambda x, t: x[:, :1], prediction="x1", schedule=sched)
    with pytest.raises(InvalidInputError, match="shape"):
        bad.denoise(x, 0.5)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4"])
def test_a_bad_max_batch_is_named_with_the_value(bad) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^`max_batch` must be an integer >= 1, got "
    ) as err:
        from_callable(lambda x, t: x, prediction="x1", schedule=RectifiedFlow(), max_batch=bad)
    assert str(err.value).endswith(f"got {bad!r}") and err.value.arg == "max_batch"


def test_an_unknown_prediction_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInputError) as err:
        from_callable(lambda x, t: x, prediction="eps", schedule=RectifiedFlow())
    assert str(err.value) == f"prediction must be one of {PREDICTIONS}, got 'eps'"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("t", [0.3, torch.tensor([0.2, 0.5, 0.7, 0.9])], ids=["scalar", "rows"])
def test_convert_computes_half_precision_in_float32(dtype, t) -> None:
    """bf16/fp16 inputs are combined in float32 and rounded once to their dtype, so the result is
    the float32 conversion of the same values, rounded."""
    g = torch.Generator().manual_seed(4)
    x, pred = (torch.randn(4, 64, generator=g).to(dtype) for _ in range(2))
    sched = Cosine()
    got = convert(pred, x, t, sched, source="x1", target="velocity")
    ref = convert(pred.float(), x.float(), t, sched, source="x1", target="velocity")
    assert got.dtype == dtype
    assert torch.equal(got, ref.to(dtype))


def test_convert_builds_per_row_coefficients_on_the_inputs_device() -> None:
    """Per-row times (host floats) become coefficients on x's device (meta stands for an
    accelerator, where a host coefficient would not multiply)."""
    x = torch.zeros(2, 3, device="meta")
    out = convert(x, x, np.array([0.2, 0.4]), Cosine(), source="velocity", target="x1")
    assert out.device.type == "meta" and out.shape == (2, 3)


@pytest.mark.parametrize("t", [0.3, np.array([0.2, 0.4])], ids=["shared", "per-row"])
def test_predict_gets_its_times_on_the_inputs_device(t) -> None:
    """`predict(x, t)` gets t on x's device in x's working dtype (at least float32), for a shared
    time and for per-row host times (meta stands for an accelerator, where host times would not
    combine with x)."""
    seen = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append((t.device.type, t.dtype))
        return x * t[:, None]

    model = from_callable(net, schedule=Cosine(), prediction="x1")
    out = model.denoise(torch.zeros(2, 3, device="meta"), t)
    assert out.device.type == "meta" and out.shape == (2, 3)
    model.denoise(torch.zeros(2, 3, dtype=torch.bfloat16), t)
    model.denoise(torch.zeros(2, 3, dtype=torch.float64), t)
    assert seen == [("meta", torch.float32), ("cpu", torch.float32), ("cpu", torch.float64)]


@pytest.mark.parametrize(
    ("t", "message"),
    [
        (np.array([0.2, 0.3, 0.4]), "t must have shape [2], got (3,)"),
        (np.array([[0.2], [0.3]]), "t must be a float or tensor, got ndarray"),
        (np.array([0.2, 1.5]), "t must be finite and inside [0, 1], got [0.2 1.5]"),
    ],
    ids=["length", "2-d", "range"],
)
def test_convert_checks_array_times_like_the_models(t: np.ndarray, message: str) -> None:
    """The public convert validates NumPy times as the models do (a wrong length used to fail
    deep in torch, a [B, 1] array passed silently)."""
    x = torch.zeros(2, 3)
    with pytest.raises(InvalidInputError) as err:
        convert(x, x, t, RectifiedFlow(), source="velocity", target="x1")
    assert str(err.value) == message


_X = torch.zeros(3, 2)
_OK = from_callable(lambda x, t: x, prediction="x1", schedule=RectifiedFlow())
_MESSAGES = {
    "x-list": (lambda: _OK.denoise([[0.0, 0.0]], 0.5), "x must be a torch.Tensor, got list"),
    "x-empty": (
        lambda: _OK.denoise(torch.zeros(0, 2), 0.5),
        "x must have shape [B, ...] with B >= 1, got (0, 2)",
    ),
    "x-0d": (
        lambda: _OK.denoise(torch.tensor(1.0), 0.5),
        "x must have shape [B, ...] with B >= 1, got ()",
    ),
    "x-int": (
        lambda: _OK.denoise(torch.zeros(3, 2, dtype=torch.int64), 0.5),
        "x must be a floating-point tensor, got torch.int64",
    ),
    "t-above": (lambda: _OK.denoise(_X, 1.5), "t must be finite and inside [0, 1], got 1.5"),
    "t-nan": (lambda: _OK.denoise(_X, float("nan")), "t must be finite and inside [0, 1], got nan"),
    "t-0d": (
        lambda: _OK.denoise(_X, torch.tensor(-0.5)),
        "t must be finite and inside [0, 1], got -0.5",
    ),
    "t-rows": (
        lambda: _OK.denoise(_X, torch.tensor([0.1, 1.2, 0.3], dtype=torch.float64)),
        "t must be finite and inside [0, 1], got [0.1 1.2 0.3]",
    ),
    "t-tensor-length": (
        lambda: _OK.denoise(_X, torch.zeros(2)),
        "t must be a float, a 0-d tensor or a [B]=3 tensor, got shape (2,)",
    ),
    "t-array-length": (
        lambda: _OK.denoise(_X, np.zeros(2)),
        "t must have shape [3], got (2,)",
    ),
    "t-str": (lambda: _OK.denoise(_X, "soon"), "t must be a float or tensor, got str"),
    "t-numeric-str": (lambda: _OK.denoise(_X, "0.5"), "t must be a float or tensor, got str"),
    "t-bool": (lambda: _OK.denoise(_X, True), "t must be a float or tensor, got bool"),
    "coefficients-source": (
        lambda: conversion_coefficients(RectifiedFlow(), 0.5, "eps", "x1"),
        f"prediction must be one of {PREDICTIONS}, got 'eps'",
    ),
    "fn": (
        lambda: from_callable(3, prediction="x1", schedule=RectifiedFlow()),
        "fn must be callable, got int",
    ),
    "source": (
        lambda: convert(_X, _X, 0.5, RectifiedFlow(), source="eps", target="x1"),
        f"source must be one of {PREDICTIONS}, got 'eps'",
    ),
    "target": (
        lambda: convert(_X, _X, 0.5, RectifiedFlow(), source="x1", target="noise"),
        f"target must be one of {PREDICTIONS}, got 'noise'",
    ),
    "convert-t-rows": (  # per-row times are checked against x's rows
        lambda: convert(
            _X, _X, torch.tensor([0.2, 0.4]), RectifiedFlow(), source="x1", target="velocity"
        ),
        "t must be a float, a 0-d tensor or a [B]=3 tensor, got shape (2,)",
    ),
    "convert-t-list": (
        lambda: convert(_X, _X, [0.2, 0.4, 0.6], RectifiedFlow(), source="x1", target="velocity"),
        "t must be a float or tensor, got list",
    ),
    "undetermined": (  # at t = 1 (sigma = 0) the clean sample says nothing about the noise
        lambda: _OK.as_prediction(_X, 1.0, "epsilon"),
        "t: cannot convert a 'x1' prediction to 'epsilon' at t=1.0 (alpha_t=1.0, sigma_t=0.0: "
        "the prediction does not determine it there)",
    ),
}


@pytest.mark.parametrize("case", sorted(_MESSAGES))
def test_bad_model_inputs_get_their_exact_message(case: str) -> None:
    call, message = _MESSAGES[case]
    with pytest.raises(InvalidInputError) as err:
        call()
    assert str(err.value) == message
    if case.startswith(("x-", "t-", "convert-t-")):  # the checks of x and t name them
        assert err.value.arg == case.removeprefix("convert-")[0]


def test_convert_combines_float32_inputs_in_float32() -> None:
    """Per-row coefficients are float32 tensors for float32 inputs (working_dtype): the result is
    A x + B pred evaluated in float32, bit for bit."""
    g = torch.Generator().manual_seed(5)
    x, pred = torch.randn(4, 256, generator=g), torch.randn(4, 256, generator=g)
    t = torch.tensor([0.2, 0.45, 0.7, 0.9], dtype=torch.float64)
    sched = Cosine()
    a, b = conversion_coefficients(sched, t.numpy(), "x1", "velocity")
    a32, b32 = (torch.tensor(c, dtype=torch.float32).view(4, 1) for c in (a, b))
    got = convert(pred, x, t, sched, source="x1", target="velocity")
    assert got.dtype == torch.float32 and torch.equal(got, a32 * x + b32 * pred)


@pytest.mark.parametrize("sched", ["rf", "vp_sd"])
def test_an_undetermined_conversion_fails_before_calling_the_model(sched: str) -> None:
    """At t = 1 (sigma = 0) the clean sample does not determine the noise; the error comes before
    the model runs, whether t is asked directly (rectified flow) or at a table's end node (VP)."""
    calls = []

    def fn(x, t):
        calls.append(len(x))
        return x

    model = from_callable(fn, prediction="x1", schedule=schedules()[sched])
    x = torch.zeros(3, 2)
    assert (model.schedule.model_time_range[1] < 1.0) == (sched == "vp_sd")
    with pytest.raises(InvalidInputError, match="cannot convert a 'x1' prediction to 'epsilon'"):
        model.epsilon(x, 1.0)
    assert calls == []
    model.denoise(x, 1.0)
    assert calls == [3]


def test_randn_like_generator_lists_are_per_chunk():
    x = torch.empty(6, 2, 3)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    batched = _random.randn_like(x, gens)
    for b, s in enumerate((5, 6, 7)):
        single = _random.randn_like(x[:2], torch.Generator().manual_seed(s))
        torch.testing.assert_close(batched[2 * b : 2 * b + 2], single, rtol=0, atol=0)
    one = _random.randn_like(x, torch.Generator().manual_seed(5))
    assert torch.equal(one, _random.randn_like(x, torch.Generator().manual_seed(5)))
    assert _random.randn_like(x.bfloat16(), None).dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="generator"):
        _random.randn_like(torch.empty(5, 2), gens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_row_times_are_float64_whatever_the_tensor_dtype(dtype) -> None:
    from glass_core.models.base import time_values

    got = time_values(torch.tensor([0.25, 0.5], dtype=dtype), 2)
    assert str(got.dtype) == "float64"
    assert got.tolist() == [0.25, 0.5]


def test_score_coefficients_at_a_sigma_zero_row_are_computed_without_numpy_warnings() -> None:
    """Per-row times with sigma = 0 in one row (rectified flow at t = 1): epsilon -> score gives
    -eps / sigma (-inf at that row) and x1 -> score raises InvalidInputError, with no numpy
    RuntimeWarning / FloatingPointError on the way, even when numpy is set to raise."""
    sched = RectifiedFlow()
    t = np.array([0.5, 1.0])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        A, B = conversion_coefficients(sched, t, "epsilon", "score")
        with pytest.raises(InvalidInputError, match="cannot convert a 'x1' prediction to 'score'"):
            conversion_coefficients(sched, t, "x1", "score")
    assert A[0] == 0.0 and B[0] == -1.0 / 0.5  # score = -eps / sigma
    assert B[1] == -np.inf


def test_a_scalar_time_at_sigma_zero_refuses_score_like_per_row_times() -> None:
    """x1 does not determine the score at sigma = 0: InvalidInputError for a scalar t as for
    per-row times."""
    model = from_callable(lambda x, t: x, prediction="x1", schedule=RectifiedFlow())
    with pytest.raises(InvalidInputError, match="cannot convert a 'x1' prediction to 'score'"):
        model.score(torch.zeros(2, 2), 1.0)


def test_a_one_dimensional_batch_and_per_row_times_up_to_one() -> None:
    """x of shape [B] (one number per row) is a batch, and per-row times may reach t = 1 (the
    clean end) as tensors and as arrays."""
    model = from_callable(lambda x, t: 2 * x, prediction="x1", schedule=RectifiedFlow())
    x = torch.tensor([0.5, -1.0], dtype=torch.float64)
    assert torch.equal(model.denoise(x, 0.5), 2 * x)
    for t in (torch.tensor([0.5, 1.0]), np.array([0.25, 1.0])):
        assert torch.equal(model.denoise(x, t), 2 * x)


def test_conversion_coefficients_read_any_array_of_real_times() -> None:
    """Times as a list or an object array of Python floats are the float64 times."""
    sched = RectifiedFlow()
    want = conversion_coefficients(sched, np.array([0.3, 0.7]), "x1", "velocity")
    for t in ([0.3, 0.7], np.array([0.3, 0.7], dtype=object)):
        got = conversion_coefficients(sched, t, "x1", "velocity")
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
