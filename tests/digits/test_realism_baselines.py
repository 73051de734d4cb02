"""Issue 25: a realism metric that sees leftover pixel noise, and the diffusers baselines driving
the embedded digits network (validated against glass_core's Euler ODE)."""

from __future__ import annotations

import pytest
import torch
from glass_core.digits.assets import load_default_reward, load_real_digits
from glass_core.digits.evidence import digit_features, pipeline_output, score_realism
from glass_core.errors import InvalidInputError
from glass_core.metrics import energy_distance, feature_energy_distance


@pytest.fixture(scope="module")
def halves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two disjoint halves of the real digits and the first half + N(0, 0.15^2) noise."""
    x, _ = load_real_digits()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    a, b = x[perm[:898]], x[perm[898:]]
    return a, b, a + 0.15 * torch.randn(a.shape, generator=g)


def test_noise_sanity_row_scores_clearly_worse_than_the_data(halves: tuple) -> None:
    a, b, noisy = halves
    feats = digit_features(load_default_reward(3).classifier)
    data, noise = score_realism(a, b, feats), score_realism(noisy, b, feats)
    # the raw pixel statistic is (nearly) blind: it does not separate the two by 2 s.e.
    raw_gap = noise.raw.value - data.raw.value
    assert raw_gap < 2 * (noise.raw.se**2 + data.raw.se**2) ** 0.5
    # clamped to the data range the noise shows (by > 2 s.e. of the difference, taking the two
    # rows as independent although they share the reference set, which only overstates the
    # s.e.); in feature space it is plain (> 10 s.e.)
    for name, margin in (("clamped", 2.0), ("features", 10.0)):
        d, n = getattr(data, name), getattr(noise, name)
        assert n.value - d.value > margin * (n.se**2 + d.se**2) ** 0.5, name
    # the data's own row is at the data level: within 3 s.e. of 0
    assert abs(data.features.value) < 3 * data.features.se
    assert data.outside == 0.0 and noise.outside > 0.2


def test_feature_energy_distance_is_invariant_to_feature_units() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64) + 0.5
    y = torch.randn(80, 5, generator=g, dtype=torch.float64)
    scale = torch.tensor([1.0, 10.0, 1e3, 0.1, 3.0], dtype=torch.float64)
    plain = feature_energy_distance(x, y, lambda z: z)
    scaled = feature_energy_distance(x, y, lambda z: z * scale + 7.0)
    assert scaled.value == pytest.approx(plain.value, rel=1e-9)
    # ... and equals the pixel statistic on inputs standardised by the reference set
    z = (x - y.mean(0)) / y.std(0)
    assert plain.value == pytest.approx(energy_distance(z, (y - y.mean(0)) / y.std(0)).value)


def test_pipeline_output_clamps_to_the_data_range() -> None:
    x = torch.tensor([-3.0, -1.0, 0.2, 1.0, 2.5])
    assert pipeline_output(x).tolist() == pytest.approx([-1.0, -1.0, 0.2, 1.0, 1.0])


@pytest.fixture(scope="module")
def digits_unet() -> object:
    from glass_core.digits.assets import load_pipeline

    return load_pipeline().unet


@pytest.mark.parametrize("name", ["unipc", "dpmpp_2m"])
def test_ode_baselines_match_the_euler_ode_at_50_steps(digits_unet: object, name: str) -> None:
    """At 50 steps a second-order diffusers solver lands closer to the ODE's solution
    (Richardson extrapolation of glass_core's Euler at 50 and 100 steps) than Euler at 50 does:
    same network, same convention (a sign or time-convention slip would be off by O(1))."""
    from glass_core.digits.assets import load_default_model
    from glass_core.digits.baselines import sample_baseline
    from glass_core.schedules import uniform_grid
    from glass_core.transitions import ODE, sample

    model = load_default_model()
    noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    def euler(n: int) -> torch.Tensor:
        with torch.no_grad():
            return sample(model, ODE(substeps=n), uniform_grid(1), x0=noise.clone()).samples

    e50 = euler(50)
    exact = 2 * euler(100) - e50
    euler_err = float((e50 - exact).abs().mean())
    err = float((sample_baseline(digits_unet, name, 50, noise) - exact).abs().mean())
    assert euler_err < 0.05  # the reference itself is an accurate ODE solution
    assert err < 0.7 * euler_err


def test_stochastic_baselines_are_seeded_and_need_a_generator(digits_unet: object) -> None:
    from glass_core.digits.baselines import sample_baseline

    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for name in ("sde_dpmpp_2m", "ddpm_ancestral"):
        with pytest.raises(InvalidInputError, match="generator"):
            sample_baseline(digits_unet, name, 3, noise)
        one, two, other = (
            sample_baseline(digits_unet, name, 3, noise, generator=torch.Generator().manual_seed(s))
            for s in (5, 5, 6)
        )
        assert torch.equal(one, two) and not torch.equal(one, other)


def test_baseline_rejects_bad_arguments(digits_unet: object) -> None:
    from glass_core.digits.baselines import make_scheduler, sample_baseline

    noise = torch.zeros(2, 1, 8, 8)
    with pytest.raises(InvalidInputError, match="name"):
        make_scheduler("euler_a")
    with pytest.raises(InvalidInputError, match="flow_shift"):
        make_scheduler("unipc", flow_shift=0.0)
    with pytest.raises(InvalidInputError, match="nfe"):
        sample_baseline(digits_unet, "unipc", 0, noise)
    with pytest.raises(InvalidInputError, match="sigmas"):
        sample_baseline(digits_unet, "unipc", 2, noise, sigmas=torch.tensor([1.0, 0.2, 0.5]))
    with pytest.raises(InvalidInputError, match="sigmas"):
        sample_baseline(digits_unet, "unipc", 2, noise, sigmas=torch.tensor([1.0, 0.0]))


def _mixture() -> object:
    from glass_core.models import GaussianMixture
    from glass_core.schedules import RectifiedFlow

    f64 = torch.float64
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]], dtype=f64)
    stds = torch.tensor([0.05, 0.2, 0.1], dtype=f64).sqrt()
    return GaussianMixture(means, stds, torch.tensor([0.3, 0.5, 0.2]), RectifiedFlow())


def test_ddpm_ancestral_baseline_between_two_noise_levels_is_glass_cores_sde() -> None:
    """With `sigmas` a baseline runs t -> t' (sigma = 1 - t): diffusers' DDPM-ancestral step and
    glass_core's SDE substep are the same kernel (the same frozen-denoiser Gaussian step), so on
    the exact mixture their samples from one x_t agree in mean and variance within Monte-Carlo
    error, and into t' = 1 both return the denoised estimate exactly."""
    from glass_core.digits.baselines import FlowNet, sample_baseline
    from glass_core.transitions import SDE

    model, n = _mixture(), 40_000
    g = torch.Generator().manual_seed(3)
    x = model.sample_marginal(1, 0.4, g).expand(n, 2)  # type: ignore[attr-defined]
    net = FlowNet(model)
    for steps in (1, 3):
        sigmas = torch.linspace(0.6, 0.4, steps + 1)
        ours = SDE(substeps=steps)(model, x, 0.4, 0.6, g)
        theirs = sample_baseline(net, "ddpm_ancestral", steps, x, generator=g, sigmas=sigmas)
        for a, b in ((ours, theirs), (ours**2, theirs**2)):  # first and second moments
            se = ((a.var(0) + b.var(0)) / n).sqrt()
            assert ((a.mean(0) - b.mean(0)).abs() < 5 * se).all(), steps
    end = sample_baseline(
        net, "ddpm_ancestral", 1, x[:4], generator=g, sigmas=torch.tensor([0.6, 0])
    )
    assert torch.allclose(end, SDE(substeps=1)(model, x[:4], 0.4, 1.0, g), atol=1e-5)


def test_pool_realism_averages_independent_sets_and_combines_their_errors() -> None:
    from glass_core.digits.evidence import Realism, pool_realism
    from glass_core.metrics import Estimate

    def realism(v: float, se: float, out: float) -> Realism:
        return Realism(Estimate(v, se), Estimate(2 * v, se), Estimate(3 * v, 2 * se), out)

    pooled = pool_realism([realism(1.0, 0.3, 0.1), realism(3.0, 0.4, 0.3)])
    assert pooled.raw.value == pytest.approx(2.0) and pooled.raw.se == pytest.approx(0.25)
    assert pooled.clamped.value == pytest.approx(4.0)
    assert pooled.features.value == pytest.approx(6.0) and pooled.features.se == pytest.approx(0.5)
    assert pooled.outside == pytest.approx(0.2)
    with pytest.raises(ValueError, match="at least one"):
        pool_realism([])
    # k independent null sets (same distribution): the pooled estimate is within 4 pooled s.e.
    # of 0 and its s.e. about 1/sqrt(k) of one set's
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(300, 6, generator=g)
    sets = [energy_distance(torch.randn(200, 6, generator=g), ref) for _ in range(4)]
    null = pool_realism([Realism(e, e, e, 0.0) for e in sets])
    assert abs(null.raw.value) < 4 * null.raw.se
    assert null.raw.se == pytest.approx(sets[0].se / 2, rel=0.3)


def test_unsteered_table_keeps_each_rows_best_grid_and_names_the_strongest_row() -> None:
    from glass_core.digits.unsteered import Row, load_reference, measure_rows, realism_table

    reference = load_reference(seed=0)
    x, _ = load_real_digits()
    held = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[len(x) // 2 :]]

    def noisy(sd: float):  # a "sampler" returning the held-out real digits plus noise
        def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
            return held + sd * torch.randn(held.shape, generator=gen), nfe - 1

        return run

    rows = [
        Row("noisy", ((None, noisy(0.3)),)),
        Row("two grids", ((1.0, noisy(0.3)), (2.0, noisy(0.0)))),
    ]
    bad, good = measure_rows(rows, [10], torch.zeros(1), 0, reference, log=lambda _: None)
    # the clean variant wins its row, and it is clearly better than the noisy row
    assert good["shift"] == 2.0 and good["nfe"] == 9 and bad["shift"] is None
    gap = bad["clamped"]["mean"] - good["clamped"]["mean"]
    assert gap > 3 * (bad["clamped"]["se"] ** 2 + good["clamped"]["se"] ** 2) ** 0.5
    text = realism_table([*reference.data, bad, good], [10], "clamped", "t")
    assert "Strongest at each NFE: 10: two grids" in text
    assert "| two grids | **" in text and "(shift 2, 9 NFE)" in text
    # the data rows are shown but never bold
    assert all("**" not in line for line in text.splitlines() if line.startswith("| real"))
