"""value_estimate against the closed-form value of a Gaussian mixture under a linear reward.

For r(z) = a.z and the posterior p(z | x_t) = sum_k w_k N(m_k, v_k I) (docs/math.md §7),
V_t(x) = log sum_k w_k exp(a.m_k + v_k |a|^2 / 2), and E[exp(2 r)] has the same form with 2a,
which gives the Monte-Carlo standard deviation of V-hat and its first-order (Jensen) bias
-(E[e^{2r}] / E[e^r]^2 - 1) / (2J).
"""

import math
import re

import pytest
import torch
from align_fixtures import ExactKernel, gen, gmm
from glass_core.align import value_estimate
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward
from glass_core.transitions import SDE, Glass

A = torch.tensor([1.0, 0.5], dtype=torch.float64)
LIN = LinearReward(A)
ACCURATE = Glass(inner_steps=40, solver="heun")  # covariance error ~1e-3 (docs/math.md §7)


def exact_value(model, x, t, scale=1.0):
    """log E[exp(scale * a.z) | x_t = x], [B] float64."""
    log_w, mean, var = model.posterior(x, t)
    a = scale * A
    return torch.logsumexp(log_w + mean @ a + 0.5 * var * (a @ a), dim=1)


def mc_ratio(model, x, t):
    """Var[e^r] / E[e^r]^2 under the posterior (the relative variance of one sample)."""
    return torch.exp(exact_value(model, x, t, 2.0) - 2 * exact_value(model, x, t)) - 1


@pytest.mark.parametrize("t", [0.55, 0.85])
def test_converges_to_closed_form_at_4096(t):
    model = gmm()
    x = model.sample_marginal(6, t, gen(1))
    v = value_estimate(model, LIN, x, t, num_samples=4096, transition=ACCURATE, generator=gen(2))
    exact = exact_value(model, x, t)
    mc_sd = (mc_ratio(model, x, t) / 4096).sqrt()
    assert float(mc_sd.max()) < 0.01  # so 0.05 is far outside the Monte-Carlo error
    assert float((v.values - exact).abs().max()) < 0.05, (v.values, exact)
    assert v.values.shape == (6,) and v.rewards.shape == (6, 4096)
    assert v.nfe == ACCURATE.nfe(model.schedule, t, 1.0)


# At small t the posterior is broad and exp(r) heavy, so the Monte-Carlo error at J = 4096 is
# itself ~0.03: the tolerance is 4 of its standard deviations plus 0.01 for the solver.
def test_small_t_within_monte_carlo_error():
    model, t = gmm(), 0.2
    x = model.sample_marginal(6, t, gen(3))
    v = value_estimate(model, LIN, x, t, num_samples=4096, transition=ACCURATE, generator=gen(4))
    mc_sd = (mc_ratio(model, x, t) / 4096).sqrt()
    err = (v.values - exact_value(model, x, t)).abs()
    assert bool((err < 4 * mc_sd + 0.01).all()), (err, mc_sd)


def test_error_shrinks_with_num_samples():
    model, t = gmm(), 0.55
    x = model.sample_marginal(32, t, gen(5))
    exact = exact_value(model, x, t)
    errs = [
        float(
            (
                value_estimate(
                    model, LIN, x, t, num_samples=j, transition=ExactKernel(), generator=gen(6)
                ).values
                - exact
            )
            .pow(2)
            .mean()
            .sqrt()
        )
        for j in (16, 1024)
    ]
    # RMS error ~ 1/sqrt(J): 64x the samples gives 8x less error; require at least 4x
    assert errs[1] < errs[0] / 4, errs


# Log-mean-exp is biased low: E[V-hat] - V = -(Var[e^r] / E[e^r]^2) / (2J) + O(1/J^2). Exact
# posterior samples isolate the estimator; 4000 replicate estimates at J = 16 measure the bias
# to +-0.005 (4 standard errors) against a predicted -0.043, with 25% allowed for the O(1/J^2) rest.
def test_bias_is_low_and_order_one_over_j():
    model, t, j, reps = gmm(), 0.2, 16, 4000
    x = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    v = value_estimate(
        model, LIN, x.expand(reps, 2), t, num_samples=j, transition=ExactKernel(), generator=gen(7)
    ).values
    bias = float(v.mean() - exact_value(model, x, t)[0])
    se = float(v.std()) / math.sqrt(reps)
    predicted = -float(mc_ratio(model, x, t)[0]) / (2 * j)
    assert bias < -4 * se
    assert abs(bias - predicted) < 4 * se + 0.25 * abs(predicted), (bias, predicted, se)


def test_sde_transition_and_reproducible():
    model, t = gmm(), 0.55
    x = model.sample_marginal(4, t, gen(8))
    sde = SDE(substeps=50)
    v1 = value_estimate(model, LIN, x, t, num_samples=2048, transition=sde, generator=gen(9))
    v2 = value_estimate(model, LIN, x, t, num_samples=2048, transition=sde, generator=gen(9))
    assert torch.equal(v1.values, v2.values)
    assert v1.nfe == 50
    assert float((v1.values - exact_value(model, x, t)).abs().max()) < 0.06


def test_grouped_equals_separate_calls():
    model, t = gmm(), 0.4
    x = model.sample_marginal(6, t, gen(10)).reshape(2, 3, 2)
    tr = Glass(inner_steps=4)
    v = value_estimate(model, LIN, x, t, num_samples=8, transition=tr, generator=[gen(1), gen(2)])
    assert v.values.shape == (2, 3) and v.rewards.shape == (2, 3, 8)
    for b, seed in enumerate((1, 2)):
        one = value_estimate(model, LIN, x[b], t, num_samples=8, transition=tr, generator=gen(seed))
        torch.testing.assert_close(v.values[b], one.values)


class RowsSeen:
    """Forwards to a model, recording the rows of every call."""

    def __init__(self, model):
        self.model, self.schedule, self.rows = model, model.schedule, []

    def denoise(self, x, t):
        self.rows.append(x.shape[0])
        return self.model.denoise(x, t)

    def velocity(self, x, t):
        self.rows.append(x.shape[0])
        return self.model.velocity(x, t)


def test_max_batch_splits_calls_not_results():
    model, t = gmm(), 0.4
    x = model.sample_marginal(5, t, gen(11))
    tr = Glass(inner_steps=3)
    full = value_estimate(model, LIN, x, t, num_samples=7, transition=tr, generator=gen(3))
    seen = RowsSeen(model)
    split = value_estimate(
        seen, LIN, x, t, num_samples=7, transition=tr, generator=gen(3), max_batch=4
    )
    # 3 evaluations of the 5 x 7 rows, in chunks of at most 4
    assert max(seen.rows) == 4 and sum(seen.rows) == 3 * 7 * 5
    torch.testing.assert_close(full.values, split.values)
    assert split.nfe == full.nfe == 3
    assert split.total_nfe == full.total_nfe == 3 * 7 * 5  # nfe x samples x rows


def test_bad_input():
    model = gmm()
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match="`t`"):
        value_estimate(model, LIN, x, 1.0, num_samples=4)
    with pytest.raises(InvalidInputError, match="num_samples"):
        value_estimate(model, LIN, x, 0.5, num_samples=0)
    with pytest.raises(InvalidInputError, match="`x`"):
        value_estimate(model, LIN, x, 0.5, num_samples=4, generator=[gen(0), gen(1)])
    with pytest.raises(InvalidInputError, match="model"):
        value_estimate(object(), LIN, x, 0.5, num_samples=4)
    # 2 rows x 4 posterior samples each: the reward is checked on all 8 at once
    msg = r"^reward must return shape \[8\] \(one value per particle\), got \[8, 2\]$"
    with pytest.raises(RewardError, match=msg):
        value_estimate(model, lambda z: z, x, 0.5, num_samples=4)


def test_non_finite_posterior_rewards_name_the_draws():
    """A reward NaN or inf on some posterior draws is an error naming those draws (row-major:
    row i's J draws are indices i J .. i J + J - 1), not a NaN value."""
    model = gmm()
    x = torch.zeros(2, 2, dtype=torch.float64)

    def bad(z):  # 2 rows x 3 draws: NaN on draw 1 of row 0, inf on draw 2 of row 1
        r = LIN(z).clone()
        r[1], r[5] = float("nan"), float("inf")
        return r

    msg = r"^reward returned NaN/inf for particle indices \[1, 5\]$"
    with pytest.raises(RewardError, match=msg):
        value_estimate(model, bad, x, 0.5, num_samples=3, transition=Glass(inner_steps=2))


VALUE_ERRORS = [
    ({"model": object()}, "model", "`model` must be a Denoiser (needs `schedule`), got object"),
    ({"reward": 3}, "reward", "`reward` must be callable, got int"),
    ({"t": 1.0}, "t", "`t` must be < 1 (at t = 1 the value is r(x) itself), got 1.0"),
    ({"t": math.nan}, "t", "t must be a finite float in [0, 1], got nan"),
    ({"num_samples": 0}, "num_samples", "`num_samples` must be an integer >= 1, got 0"),
    ({"max_batch": 0}, "max_batch", "`max_batch` must be an integer >= 1, got 0"),
    ({"transition": "glass"}, "transition", "`transition` must be callable, got str"),
    (
        {"generator": [gen(0), gen(1)]},
        "x",
        "`x` with a list of 2 generators must be [B_groups=2, N, ...], got shape (2, 2)",
    ),
    (
        {"x": torch.zeros(3, 2, 2), "generator": [gen(0), gen(1)]},
        "x",
        "`x` with a list of 2 generators must be [B_groups=2, N, ...], got shape (3, 2, 2)",
    ),
]


@pytest.mark.parametrize(("kw", "arg", "msg"), VALUE_ERRORS)
def test_bad_input_names_the_argument_and_the_value(kw, arg, msg):
    args = dict(model=gmm(), reward=LIN, x=torch.zeros(2, 2, dtype=torch.float64), t=0.5)
    with pytest.raises(InvalidInputError, match=f"^{re.escape(msg)}$") as info:
        value_estimate(**(args | {"num_samples": 4} | kw))
    assert info.value.arg == arg  # type: ignore[attr-defined]


def test_default_transition_is_glass_with_ten_inner_steps():
    """Without `transition` the posterior samples are drawn by Glass(inner_steps=10): the same
    values and model evaluations as passing it."""
    model, t = gmm(), 0.5
    x = model.sample_marginal(3, t, gen(12))
    default = value_estimate(model, LIN, x, t, num_samples=4, generator=gen(13))
    tr = Glass(inner_steps=10)
    given = value_estimate(model, LIN, x, t, num_samples=4, transition=tr, generator=gen(13))
    assert default.nfe == given.nfe == tr.nfe(model.schedule, t, 1.0)
    torch.testing.assert_close(default.values, given.values, rtol=0, atol=0)


def test_values_are_float64_for_a_float32_reward():
    """V-hat is computed and returned in float64 whatever the reward's dtype: the log-mean-exp
    of the float32 rewards of the draws, taken in float64."""
    model, t = gmm(), 0.5
    x = model.sample_marginal(3, t, gen(14))

    def low(z):
        return LIN(z).float()

    v = value_estimate(model, low, x, t, num_samples=5, transition=Glass(inner_steps=2))
    assert v.rewards.dtype == torch.float32 and v.values.dtype == torch.float64
    want = torch.logsumexp(v.rewards.double(), dim=1) - math.log(5)
    torch.testing.assert_close(v.values, want, rtol=0, atol=0)
