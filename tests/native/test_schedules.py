"""Schedules, time grids and GLASS coefficients of the native core against closed forms."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest
import torch
from glass_core import InvalidInputError
from glass_core import schedules as S
from hypothesis import given, settings
from hypothesis import strategies as st

SD_TABLE = S.VP.from_betas(0.00085, 0.012, 1000, "scaled_linear")
DDPM_TABLE = S.VP.from_betas(0.0001, 0.02, 1000, "linear")

SCHEDULES = {
    "rf": S.RectifiedFlow(),
    "cosine": S.Cosine(),
    "vp_sd": SD_TABLE,
    "vp_ddpm": DDPM_TABLE,
    "rf_shift3": S.shifted(S.RectifiedFlow(), 3.0),
    "vp_shift": S.shifted(SD_TABLE, 0.7),
}
IS_TABLE = {"vp_sd", "vp_ddpm", "vp_shift"}

times = st.floats(min_value=1e-6, max_value=1 - 1e-6, allow_nan=False)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_boundaries(name: str) -> None:
    s = SCHEDULES[name]
    assert s.alpha(0.0) == 0.0
    assert s.sigma(1.0) == 0.0
    assert s.sigma(0.0) == pytest.approx(1.0, abs=1e-12)
    assert s.alpha(1.0) == pytest.approx(1.0, abs=1e-12)
    assert s.log_snr(0.0) == -math.inf
    assert s.log_snr(1.0) == math.inf
    assert s.t_from_snr(0.0) == 0.0
    assert s.t_from_snr(math.inf) == 1.0


def test_closed_forms() -> None:
    t = np.linspace(0.01, 0.99, 99)
    rf, cos = S.RectifiedFlow(), S.Cosine()
    np.testing.assert_allclose(rf.alpha(t), t, rtol=0, atol=0)
    np.testing.assert_allclose(rf.sigma(t), 1 - t, rtol=0, atol=1e-16)
    np.testing.assert_allclose(rf.d_alpha(t), 1.0)
    np.testing.assert_allclose(rf.d_sigma(t), -1.0)
    np.testing.assert_allclose(cos.alpha(t), np.sin(np.pi * t / 2), rtol=1e-14)
    np.testing.assert_allclose(cos.sigma(t), np.cos(np.pi * t / 2), rtol=1e-12)
    np.testing.assert_allclose(cos.d_alpha(t), np.pi / 2 * np.cos(np.pi * t / 2), rtol=1e-12)
    np.testing.assert_allclose(cos.d_sigma(t), -np.pi / 2 * np.sin(np.pi * t / 2), rtol=1e-12)
    # docs/math.md §2 inverse maps g^-1(y), y = 1/SNR
    y = ((1 - t) / t) ** 2
    np.testing.assert_allclose(rf.t_from_snr(1 / y), 1 / (1 + np.sqrt(y)), rtol=1e-13)
    yc = 1 / np.tan(np.pi * t / 2) ** 2
    np.testing.assert_allclose(
        cos.t_from_snr(1 / yc), 2 / np.pi * np.arctan(1 / np.sqrt(yc)), rtol=1e-12
    )
    # VP tables: alpha^2 + sigma^2 = 1
    for s in (SD_TABLE, DDPM_TABLE):
        np.testing.assert_allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, 1.0, rtol=1e-13)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_derivatives_match_finite_differences(name: str) -> None:
    s = SCHEDULES[name]
    t = np.linspace(0.003, 0.997, 157)
    h = 1e-7
    for f, df in ((s.alpha, s.d_alpha), (s.sigma, s.d_sigma)):
        d = df(t)
        right = (f(t + h) - f(t)) / h
        left = (f(t) - f(t - h)) / h
        tol = 1e-5 * (1 + np.abs(d))
        if name in IS_TABLE:  # piecewise-linear log-SNR: one-sided derivative at nodes
            ok = (np.abs(d - right) < tol) | (np.abs(d - left) < tol)
        else:
            ok = np.abs(d - (right + left) / 2) < tol
        assert ok.all(), (name, t[~ok][:5])


@pytest.mark.parametrize("name", list(SCHEDULES))
@settings(max_examples=60, deadline=None)
@given(t=times)
def test_round_trip_t_of_snr(name: str, t: float) -> None:
    s = SCHEDULES[name]
    snr = (s.alpha(t) / s.sigma(t)) ** 2
    t2 = s.t_from_snr(snr)
    assert t2 == pytest.approx(t, abs=1e-9)
    assert s.t_from_log_snr(s.log_snr(t)) == pytest.approx(t, abs=1e-9)
    # 1e-6 relative in SNR
    assert (s.alpha(t2) / s.sigma(t2)) ** 2 == pytest.approx(snr, rel=1e-6)


def test_vp_table_monotone_and_nodes() -> None:
    t = np.linspace(0, 1, 20001)
    for s in (SD_TABLE, DDPM_TABLE):
        ls = s.log_snr(t)
        assert np.all(np.diff(ls) > 0)
        assert np.all(np.diff(s.alpha(t)) > 0) and np.all(np.diff(s.sigma(t)) < 0)
        ac = s.alphas_cumprod()
        T = len(ac)
        k = np.arange(T)
        tk = s.t_from_timestep(k.astype(float))
        np.testing.assert_allclose(tk, 1 - (k + 1) / (T + 1), rtol=1e-15)
        np.testing.assert_allclose(s.alpha(tk) ** 2, ac, rtol=1e-12)
        np.testing.assert_allclose(s.timestep_from_t(tk), k, atol=1e-9)
        # near-noise closure: alpha ∝ t below the first node (log-SNR slope 2/t)
        t_lo = 1 / (T + 1)
        np.testing.assert_allclose(
            s.log_snr(t_lo / 4), s.log_snr(t_lo) + 2 * math.log(0.25), rtol=1e-12
        )


def test_vp_from_betas_matches_diffusers_formula() -> None:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ac = np.cumprod(1 - betas)
    np.testing.assert_allclose(SD_TABLE.alphas_cumprod(), ac, rtol=1e-12)
    from_table = S.VP.from_alphas_cumprod(torch.tensor(ac, dtype=torch.float32))
    assert from_table.num_train_timesteps == 1000
    t = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(from_table.alpha(t), SD_TABLE.alpha(t), rtol=1e-5)
    assert SD_TABLE.name == "vp(T=1000)"


def test_shifted_schedule_is_base_at_mapped_time() -> None:
    base, shift = S.RectifiedFlow(), 3.0
    s = S.shifted(base, shift)
    t = np.linspace(0, 1, 101)
    tau = 1 - t
    m = 1 - shift * tau / (1 + (shift - 1) * tau)
    np.testing.assert_allclose(s.alpha(t), base.alpha(m), atol=1e-15)
    np.testing.assert_allclose(s.sigma(t), base.sigma(m), atol=1e-15)
    # FLUX sigma' = s sigma / (1 + (s-1) sigma) is the new sigma
    np.testing.assert_allclose(s.sigma(t), shift * tau / (1 + (shift - 1) * tau), atol=1e-15)
    assert s.shift == 3.0 and s.base == base and s.kind == "shifted"


@pytest.mark.parametrize("shift", ["3", True, np.True_, None, [3.0], torch.tensor([3.0, 1.0])])
def test_shifted_refuses_what_is_not_a_real_number(shift: object) -> None:
    """A string is not parsed, a boolean not read as 1.0; anything else is a typed error too."""
    msg = rf"^shift must be a real number, got {re.escape(repr(shift))}$"
    with pytest.raises(InvalidInputError, match=msg) as e:
        S.shifted(S.RectifiedFlow(), shift)  # type: ignore[arg-type]
    assert e.value.arg == "shift"  # type: ignore[attr-defined]


@pytest.mark.parametrize("shift", [3, np.float32(3.0), np.array(3.0), torch.tensor(3.0)])
def test_shifted_takes_any_real_number(shift: object) -> None:
    assert S.shifted(S.RectifiedFlow(), shift).shift == 3.0  # type: ignore[arg-type]


def test_dynamic_shift_mu_is_diffusers_formula() -> None:
    for L in (256, 1024, 4096, 6000):
        m = (1.15 - 0.5) / (4096 - 256)
        assert S.dynamic_shift_mu(L) == pytest.approx(L * m + 0.5 - m * 256, rel=1e-14)
    s = S.dynamic_shift(S.RectifiedFlow(), 4096)
    assert s.shift == pytest.approx(math.exp(1.15))


def test_dynamic_shift_defaults_are_diffusers_flux_config() -> None:
    """The wrapper's defaults (256, 4096, 0.5, 1.15) against mu linear in L, at L where every
    default matters (at L = 4096 mu is max_shift whatever base_seq_len and base_shift are)."""
    m = (1.15 - 0.5) / (4096 - 256)
    for L in (256, 1024, 2000):
        s = S.dynamic_shift(S.RectifiedFlow(), L)
        assert s.shift == pytest.approx(math.exp(0.5 + m * (L - 256)), rel=1e-13)
    custom = S.dynamic_shift(S.RectifiedFlow(), 300, 200, 1200, 0.25, 2.25)
    assert custom.shift == pytest.approx(math.exp(0.25 + 2.0 / 1000 * 100), rel=1e-13)


@pytest.mark.parametrize(("L", "shift"), [(10**7, "inf"), (-(10**7), "0.0")])
def test_dynamic_shift_out_of_range_names_the_sequence_length(L: int, shift: str) -> None:
    """mu ~ +-1700 here: exp(mu) overflows to inf (caught) or underflows to 0; both are outside
    shifted()'s range, and the error is blamed on image_seq_len with the shift it gave."""
    msg = rf"^image_seq_len = {L} gives shift must be a number in \[1e-6, 1e6\], got {shift}$"
    with pytest.raises(InvalidInputError, match=msg) as e:
        S.dynamic_shift(S.RectifiedFlow(), L)
    assert e.value.arg == "image_seq_len"  # type: ignore[attr-defined]


def test_vp_from_betas_defaults_are_1000_linear_steps() -> None:
    betas = np.linspace(0.0001, 0.02, 1000)
    s = S.VP.from_betas(0.0001, 0.02)
    assert s == DDPM_TABLE
    np.testing.assert_allclose(s.alphas_cumprod(), np.cumprod(1 - betas), rtol=1e-12)


def test_grids() -> None:
    g = S.uniform_grid(5)
    np.testing.assert_allclose(g, [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-15)
    assert g[0] == 0.0 and g[-1] == 1.0
    g2 = S.uniform_grid(4, 0.2, 0.6)
    assert g2[0] == 0.2 and g2[-1] == 0.6 and len(g2) == 5
    sg = S.shifted_grid(10, 3.0)
    sig = np.linspace(1, 0, 11)
    np.testing.assert_allclose(sg, 1 - 3 * sig / (1 + 2 * sig), atol=1e-15)
    assert sg[0] == 0.0 and sg[-1] == 1.0
    np.testing.assert_array_equal(S.validate_time_grid([0.0, 0.5, 1.0]), [0.0, 0.5, 1.0])
    S.validate_time_grid(torch.tensor([0.0, 0.25, 1.0]))


@pytest.mark.parametrize(
    "grid", [[0.0, 0.5, 0.5], [0.0, 0.7, 0.3], [-0.1, 0.5], [0.0, 1.5], [0.0], [0.0, math.nan]]
)
def test_validate_time_grid_errors(grid: list[float]) -> None:
    with pytest.raises(InvalidInputError, match="time_grid"):
        S.validate_time_grid(grid)


def test_rho_ddpm() -> None:
    rf = S.RectifiedFlow()
    for t, tn in ((0.1, 0.3), (0.5, 0.9), (0.2, 0.21)):
        assert rf.rho_ddpm(t, tn) == pytest.approx(t * (1 - tn) / ((1 - t) * tn), rel=1e-14)
        assert S.rho_ddpm(rf, t, tn) == rf.rho_ddpm(t, tn)
    assert rf.rho_ddpm(0.0, 0.5) == 0.0
    assert rf.rho_ddpm(0.5, 1.0) == 0.0
    for s in SCHEDULES.values():
        r = s.rho_ddpm(0.3, 0.6)
        assert 0 < r < 1
        a, sg = s.alpha, s.sigma
        assert r == pytest.approx(a(0.3) * sg(0.6) / (sg(0.3) * a(0.6)), rel=1e-12)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0.5, 0.5), "t_next"),
        ((0.6, 0.5), "t_next"),
        ((1.0, 1.0), "t"),
        ((-0.1, 0.5), "t"),
        ((math.nan, 0.5), "t"),
        ((0.2, 1.5), "t_next"),
    ],
)
def test_rho_ddpm_errors(args: tuple[float, float], name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        S.RectifiedFlow().rho_ddpm(*args)


def test_scalar_array_and_torch_inputs() -> None:
    s = SD_TABLE
    assert isinstance(s.alpha(0.5), float)
    assert isinstance(s.alpha(1), float)
    out = s.alpha(np.array([[0.1, 0.2], [0.3, 0.4]]))
    assert out.shape == (2, 2) and out.dtype == np.float64
    np.testing.assert_allclose(s.alpha(torch.tensor([0.1, 0.4])), s.alpha(np.array([0.1, 0.4])))
    assert isinstance(s.alpha(np.float64(0.3)), float) or np.ndim(s.alpha(np.float64(0.3))) == 0
    np.testing.assert_allclose(s.alpha(np.array([0.25], np.float32)), s.alpha(0.25), rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda s: s.alpha(1.5), "t"),
        (lambda s: s.sigma(np.array([0.2, math.nan])), "t"),
        (lambda s: s.d_alpha(-0.1), "t"),
        (lambda s: s.t_from_snr(-1.0), "snr"),
        (lambda s: s.t_from_log_snr(math.nan), "lsnr"),
        (lambda s: s.alpha("0.5"), "t"),
        (lambda s: s.timestep_from_t(0.5), "VP"),
    ],
)
def test_schedule_errors(call, name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        call(S.RectifiedFlow())


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: S.VP.from_alphas_cumprod([0.5, 0.9]), "alphas_cumprod"),
        (lambda: S.VP.from_alphas_cumprod([0.9, 1.0]), "alphas_cumprod"),
        (lambda: S.VP.from_alphas_cumprod([[0.9, 0.5]]), "alphas_cumprod"),
        (lambda: S.VP.from_betas(0.1, 0.2, 1000, "cubic"), "kind"),
        (lambda: S.VP.from_betas(-0.1, 0.2), "beta_start"),
        (lambda: S.VP.from_betas(0.1, 0.2, 1), "num_train_timesteps"),
        (lambda: S.shifted(S.RectifiedFlow(), 0.0), "shift"),
        (lambda: S.uniform_grid(0), "num_steps"),
        (lambda: S.uniform_grid(4, 0.5, 0.2), "t_end"),
        (lambda: S.shifted_grid(4, -1.0), "shift"),
    ],
)
def test_factory_errors(factory, name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        factory()


def test_pickle_and_equality() -> None:
    for s in SCHEDULES.values():
        s2 = pickle.loads(pickle.dumps(s))
        assert s2 == s and hash(s2) == hash(s) and s2.name == s.name
    assert S.RectifiedFlow() != S.Cosine()


# ---------------------------------------------------------------------------------------------
# GLASS coefficients (docs/math.md §3-3)


def test_glass_k1_rectified_flow_is_the_outer_ode() -> None:
    s = np.linspace(0, 0.9, 10)
    c = S.glass_coefficients(S.RectifiedFlow(), 0.0, 1.0, 0.4, s)
    assert c["gamma"] == 0.0 and c["abar"] == pytest.approx(1.0) and c["sbar"] == 0.0
    np.testing.assert_allclose(c["t_star"][1:], s[1:], rtol=1e-12)
    np.testing.assert_allclose((c["alpha_star"] * c["c_y"])[1:], 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_glass_coefficients_closed_forms(name: str) -> None:
    sch = SCHEDULES[name]
    t, tn, rho, sig0 = 0.3, 0.55, 0.4, 1.0
    s = np.linspace(0, 1, 11)
    c = S.glass_coefficients(sch, t, tn, rho, s, sig0)
    a_t, s_t, a_n, s_n = sch.alpha(t), sch.sigma(t), sch.alpha(tn), sch.sigma(tn)
    gam = rho * s_n / s_t
    abar = a_n - gam * a_t
    sbar = s_n * math.sqrt(1 - rho**2)
    assert c["gamma"] == pytest.approx(gam, rel=1e-14)
    assert c["abar"] == pytest.approx(abar, rel=1e-14)
    assert c["sbar"] == pytest.approx(sbar, rel=1e-14)
    a_s, s_s = s * abar, (1 - s) * sig0 + s * sbar
    np.testing.assert_allclose(c["a_s"], a_s, rtol=1e-14)
    np.testing.assert_allclose(c["s_s"], s_s, rtol=1e-14)
    w1 = (sbar - sig0) / s_s
    np.testing.assert_allclose(c["w1"], w1, rtol=1e-13)
    np.testing.assert_allclose(c["w2"], abar * sig0 / s_s, rtol=1e-12)
    np.testing.assert_allclose(c["w3"], -gam * w1, rtol=1e-13)
    lam = (a_t / s_t) ** 2 + (a_s / s_s) ** 2
    np.testing.assert_allclose(c["lam"], lam, rtol=1e-12)
    ts = c["t_star"]
    np.testing.assert_allclose((sch.alpha(ts) / sch.sigma(ts)) ** 2, lam, rtol=1e-6)
    np.testing.assert_allclose(c["alpha_star"], sch.alpha(ts), rtol=1e-14)
    np.testing.assert_allclose(c["c_x"][1:], (a_t / s_t**2 / lam)[1:], rtol=1e-12)
    np.testing.assert_allclose(c["c_y"], a_s / s_s**2 / lam, rtol=1e-12, atol=0)
    assert np.all(np.diff(ts) > 0) and ts[-1] >= tn - 1e-12
    # s = 0: the model is queried at (x_t, t)
    assert ts[0] == t and c["lam"][0] == pytest.approx((a_t / s_t) ** 2)
    assert c["alpha_star"][0] * c["c_x"][0] == pytest.approx(1.0, rel=1e-14)


def test_glass_s_one_singular_edge() -> None:
    c = S.glass_coefficients(S.RectifiedFlow(), 0.2, 1.0, 0.4, np.array([0.0, 0.5, 1.0]))
    assert c["lam"][2] == math.inf and c["t_star"][2] == 1.0 and c["alpha_star"][2] == 1.0
    assert c["c_x"][2] == 0.0 and c["c_y"][2] == pytest.approx(1 / c["abar"])
    assert np.isnan([c["w1"][2], c["w2"][2], c["w3"][2]]).all()
    c = S.glass_coefficients(S.RectifiedFlow(), 0.2, 0.5, 1.0, [1.0])
    assert c["t_star"][0] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"t": 0.5, "t_next": 0.4}, "t_next"),
        ({"t": 1.0, "t_next": 1.0}, "t"),
        ({"rho": 1.5}, "rho"),
        ({"rho": math.nan}, "rho"),
        ({"s": [0.5, 1.2]}, "s"),
        ({"s": [[0.5]]}, "s"),
        ({"sigma0": 0.0}, "sigma0"),
    ],
)
def test_glass_coefficient_errors(kwargs: dict, name: str) -> None:
    args = {"t": 0.2, "t_next": 0.4, "rho": 0.3, "s": [0.0, 0.5]} | kwargs
    with pytest.raises(InvalidInputError, match=name):
        S.glass_coefficients(S.RectifiedFlow(), **args)


def test_check_rho_returns_the_rho_it_accepts():
    """'ddpm' comes back as 'ddpm', a number in [-1, 1] as its float."""
    assert S.check_rho("ddpm") == "ddpm"
    assert S.check_rho(0.5) == 0.5 and S.check_rho(-1) == -1.0
