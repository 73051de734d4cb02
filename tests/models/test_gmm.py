"""The exact GaussianMixture model against Monte Carlo and independent closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from align_fixtures import gmm as spec_gmm
from glass_core.errors import InvalidInputError
from glass_core.models import GaussianMixture
from glass_core.schedules import Cosine, RectifiedFlow
from stat_checks import Z, assert_moments, energy_pvalue

F64 = torch.float64


def torch_mixture(means, stds, weights):
    comp = torch.distributions.Independent(
        torch.distributions.Normal(means, stds.unsqueeze(1).expand_as(means)), 1
    )
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(weights), comp)


@pytest.mark.parametrize("sched", [RectifiedFlow(), Cosine()], ids=["rf", "cosine"])
@pytest.mark.parametrize("t", [0.3, 0.6])
def test_denoiser_matches_importance_sampled_posterior_mean(sched, t):
    model = spec_gmm(sched)
    g = torch.Generator().manual_seed(10)
    z = model.sample(200_000, g)
    a, s = sched.alpha(t), sched.sigma(t)
    xs = model.sample_marginal(5, t, g)
    for x in xs:
        logw = -((x - a * z) ** 2).sum(1) / (2 * s * s)
        w = torch.softmax(logw, 0)
        est = w @ z
        se = ((w.unsqueeze(1) ** 2) * (z - est) ** 2).sum(0).sqrt()  # delta-method SNIS error
        exact = model.denoise(x.unsqueeze(0), t)[0]
        assert torch.all((est - exact).abs() < Z * se + 1e-9), (x, est, exact, se)


def test_posterior_pieces_and_sampler():
    model = spec_gmm()
    x = torch.tensor([[0.3, -0.4]], dtype=F64)
    log_w, mean, _ = model.posterior(x, 0.55)
    assert torch.allclose(torch.logsumexp(log_w, 1), torch.zeros(1, dtype=F64))
    d = (log_w.exp().unsqueeze(-1) * mean).sum(1)
    torch.testing.assert_close(d, model.denoise(x, 0.55), rtol=1e-12, atol=1e-12)
    g = torch.Generator().manual_seed(11)
    zs = model.sample_posterior(x.expand(100_000, 2), 0.55, g)
    mu, cov = model.transition_moments(x, 0.55, 1.0, 0.3)  # t'=1 kernel is the posterior
    assert_moments(zs, mu[0], cov[0], what="posterior sampler")


def brute_force_kernel(model, x, t, t_next, rho, g):
    """z ~ p(z|x_t), then x_t' ~ N(abar z + gamma x_t, sbar^2 I), coefficients from §2 by hand."""
    s = model.schedule
    r = s.rho_ddpm(t, t_next) if rho == "ddpm" else rho
    gamma = r * s.sigma(t_next) / s.sigma(t)
    abar = s.alpha(t_next) - gamma * s.alpha(t)
    sbar = s.sigma(t_next) * math.sqrt(max(1 - r * r, 0.0))
    z = model.sample_posterior(x, t, g)
    return abar * z + gamma * x + sbar * torch.randn(x.shape, generator=g, dtype=F64)


CASES = [
    (0.55, 0.8, 0.4),
    (0.3, 0.7, "ddpm"),
    (0.4, 0.6, -0.5),
    (0.2, 1.0, 0.0),
    (0.5, 0.9, 1.0),
    (0.0, 0.5, 0.4),
]


@pytest.mark.parametrize("t,t_next,rho", CASES)
def test_exact_kernel_matches_brute_force(t, t_next, rho):
    model = spec_gmm(Cosine())
    x = torch.tensor([[0.3, -0.4]], dtype=F64).expand(100_000, 2)
    g = torch.Generator().manual_seed(12)
    bf = brute_force_kernel(model, x, t, t_next, rho, g)
    mu, cov = model.transition_moments(x[:1], t, t_next, rho)
    assert_moments(bf, mu[0], cov[0], what=f"brute force {t}->{t_next} rho={rho}")
    exact = model.sample_transition(x, t, t_next, rho, g)
    assert_moments(exact, mu[0], cov[0], what="sample_transition")
    assert energy_pvalue(exact, bf) > 0.01


def test_transition_log_prob_matches_joint_conditioning_form():
    """§9 'equivalent form': condition the 2-time Gaussian joint given the component."""
    sched = Cosine()
    model = spec_gmm(sched)
    g = torch.Generator().manual_seed(13)
    x = 2 * torch.randn(7, 2, generator=g, dtype=F64)
    y = 2 * torch.randn(7, 2, generator=g, dtype=F64)
    m, v, pi = model.means, model.stds**2, model.weights
    for t, tn, rho in [(0.55, 0.8, 0.4), (0.3, 0.7, "ddpm"), (0.2, 0.9, -0.7), (0.1, 1.0, 0.5)]:
        r = sched.rho_ddpm(t, tn) if rho == "ddpm" else rho
        a, s, a2, s2 = sched.alpha(t), sched.sigma(t), sched.alpha(tn), sched.sigma(tn)
        big_v, big_w, c = a * a * v + s * s, a2 * a2 * v + s2 * s2, a * a2 * v + r * s * s2
        logw = (
            torch.log(pi) - ((x.unsqueeze(1) - a * m) ** 2).sum(-1) / (2 * big_v) - torch.log(big_v)
        )  # d/2 log(V) with d = 2
        logw = logw - torch.logsumexp(logw, 1, keepdim=True)
        mean = a2 * m + (c / big_v).unsqueeze(-1) * (x.unsqueeze(1) - a * m)
        var = big_w - c * c / big_v
        comp = -((y.unsqueeze(1) - mean) ** 2).sum(-1) / (2 * var) - torch.log(2 * math.pi * var)
        want = torch.logsumexp(logw + comp, 1)
        got = model.transition_log_prob(y, x, t, tn, rho)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_log_prob_marginals_and_samplers():
    model = spec_gmm(Cosine())
    ref = torch_mixture(model.means, model.stds, model.weights)
    g = torch.Generator().manual_seed(14)
    z = 3 * torch.randn(20, 2, generator=g, dtype=F64)
    torch.testing.assert_close(model.log_prob(z), ref.log_prob(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.marginal_log_prob(z, 1.0), ref.log_prob(z))
    t = 0.4
    a, s = model.schedule.alpha(t), model.schedule.sigma(t)
    ref_t = torch_mixture(a * model.means, (a * a * model.stds**2 + s * s).sqrt(), model.weights)
    torch.testing.assert_close(model.marginal_log_prob(z, t), ref_t.log_prob(z))
    samples = model.sample(100_000, g)
    assert_moments(samples, model.mean(), model.covariance(), what="sample")
    xt = model.sample_marginal(100_000, t, g)
    cov_t = a * a * model.covariance() + s * s * torch.eye(2, dtype=F64)
    assert_moments(xt, a * model.mean(), cov_t, what="sample_marginal")
    # component occupancy of the data sampler
    k = model.posterior(samples, 1.0)[0].argmax(1)
    freq = torch.bincount(k, minlength=3).double() / len(k)
    assert torch.all((freq - model.weights).abs() < Z * (model.weights / len(k)).sqrt())


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_tilted_is_exact(kind):
    model = spec_gmm()
    if kind == "linear":
        params, lam = torch.tensor([1.0, -0.5], dtype=F64), 0.7

        def reward(z):
            return z @ params
    else:
        params, lam = {"c": torch.tensor([1.0, 1.0], dtype=F64), "s": 1.5}, 2.0

        def reward(z):
            return -((z - params["c"]) ** 2).sum(1) / (2 * 1.5**2)

    tilt = model.tilted(kind, params, lam)
    g = torch.Generator().manual_seed(15)
    z = 3 * torch.randn(50, 2, generator=g, dtype=F64)
    torch.testing.assert_close(tilt.reward(z), reward(z), rtol=1e-12, atol=1e-12)
    # density identity: log p~(z) = log p(z) + lam r(z) - log Z, exactly
    want = model.log_prob(z) + lam * reward(z) - tilt.log_normalizer
    torch.testing.assert_close(tilt.log_prob(z), want, rtol=1e-10, atol=1e-10)
    # log Z against plain Monte Carlo E_p[exp(lam r)]
    e = torch.exp(lam * reward(model.sample(200_000, g)))
    se = e.std() / math.sqrt(len(e))
    assert abs(e.mean() - math.exp(tilt.log_normalizer)) < Z * se
    assert model.tilted(kind, params, 0.0).log_normalizer == pytest.approx(0.0, abs=1e-12)


_M = torch.zeros(2, 3)
_X = torch.zeros(4, 2, dtype=F64)
_BAD = {  # case -> (call on spec_gmm() (2-d, 3 components), message)
    "means-rank": (
        lambda g: GaussianMixture(torch.zeros(3), torch.ones(3), torch.ones(3)),
        "means must have shape [K, d], got (3,)",
    ),
    "means-empty": (
        lambda g: GaussianMixture(torch.zeros(0, 2), torch.ones(0), torch.ones(0)),
        "means must have shape [K, d], got (0, 2)",
    ),
    "stds-shape": (
        lambda g: GaussianMixture(_M, torch.ones(3), torch.ones(2)),
        "stds must have shape [2], got (3,)",
    ),
    "weights-shape": (
        lambda g: GaussianMixture(_M, torch.ones(2), torch.ones(3)),
        "weights must have shape [2], got (3,)",
    ),
    "means-nan": (
        lambda g: GaussianMixture(torch.full((2, 3), math.nan), torch.ones(2), torch.ones(2)),
        "means must be finite",
    ),
    "stds-zero": (
        lambda g: GaussianMixture(_M, torch.tensor([1.0, 0.0]), torch.ones(2)),
        "stds must be finite and > 0",
    ),
    "stds-inf": (
        lambda g: GaussianMixture(_M, torch.tensor([1.0, math.inf]), torch.ones(2)),
        "stds must be finite and > 0",
    ),
    "weights-negative": (
        lambda g: GaussianMixture(_M, torch.ones(2), torch.tensor([1.0, -1.0])),
        "weights must be finite, >= 0 and not all zero",
    ),
    "weights-zero": (
        lambda g: GaussianMixture(_M, torch.ones(2), torch.zeros(2)),
        "weights must be finite, >= 0 and not all zero",
    ),
    "weights-nan": (
        lambda g: GaussianMixture(_M, torch.ones(2), torch.tensor([1.0, math.nan])),
        "weights must be finite, >= 0 and not all zero",
    ),
    "x-dim": (
        lambda g: g.denoise(torch.zeros(4, 3), 0.5),
        "x must have shape [B, 2] (or [B, ...] with 2 elements per row), got (4, 3)",
    ),
    "t-next-equal": (
        lambda g: g.sample_transition(_X, 0.5, 0.5, 0.4),
        "t_next must be > t, got t=0.5, t_next=0.5",
    ),
    "t-next-below": (
        lambda g: g.transition_log_prob(_X, _X, 0.6, 0.5, 0.4),
        "t_next must be > t, got t=0.6, t_next=0.5",
    ),
    "t-negative": (
        lambda g: g.sample_transition(_X, -0.1, 0.5, 0.4),
        "t must be a finite float in [0, 1], got -0.1",
    ),
    "t-next-text": (
        lambda g: g.sample_transition(_X, 0.1, "later", 0.4),
        "t_next must be a float in [0, 1], got 'later'",
    ),
    "t-rows": (
        lambda g: g.sample_transition(_X, torch.zeros(2), 0.5, 0.4),
        "t must be a scalar time, got shape (2,)",
    ),
    "rho-above": (
        lambda g: g.sample_transition(_X, 0.2, 0.5, 1.5),
        "rho must be a float in [-1, 1] or 'ddpm', got 1.5",
    ),
    "rho-name": (
        lambda g: g.sample_transition(_X, 0.2, 0.5, "ddim"),
        "rho must be a float in [-1, 1] or 'ddpm', got 'ddim'",
    ),
    "x-next-shape": (
        lambda g: g.transition_log_prob(torch.zeros(3, 2, dtype=F64), _X, 0.2, 0.5, 0.4),
        "x_next must have the shape of x (4, 2), got (3, 2)",
    ),
    "reward-kind": (
        lambda g: g.tilted("cubic", None, 1.0),
        "reward_kind must be 'linear' or 'quadratic', got 'cubic'",
    ),
    "lambda-nan": (
        lambda g: g.tilted("linear", torch.zeros(2), math.nan),
        "lambda_ must be finite, got nan",
    ),
    "lambda-negative": (
        lambda g: g.tilted("quadratic", {"c": torch.zeros(2), "s": 1.0}, -1.0),
        "lambda_ must be >= 0 for a quadratic reward, got -1.0",
    ),
    "linear-a": (
        lambda g: g.tilted("linear", torch.zeros(3), 1.0),
        "params: linear reward needs a finite a of shape [2]",
    ),
    "quadratic-c": (
        lambda g: g.tilted("quadratic", (torch.tensor([0.0, math.inf]), 1.0), 1.0),
        "params: quadratic reward needs a finite c of shape [2]",
    ),
    "quadratic-s": (
        lambda g: g.tilted("quadratic", {"c": torch.zeros(2), "s": 0.0}, 1.0),
        "params: quadratic reward needs s > 0, got 0.0",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_inputs_get_their_exact_message(case: str) -> None:
    call, message = _BAD[case]
    with pytest.raises(InvalidInputError) as err:
        call(spec_gmm())
    assert str(err.value) == message
    if case in ("t-negative", "t-next-text", "t-rows"):  # scalar_time names its argument
        assert err.value.arg == message.split()[0]
