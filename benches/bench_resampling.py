"""Resampling and SMC bookkeeping: glass_core vs plain numpy vs the `particles` library.

Two ways to run it:

* ``python benches/bench_resampling.py`` prints one markdown table, all figures from one run
  (best of several repeats, wall time per call, log-weights in -> int64 ancestor indices out).
* ``python -m pytest benches/bench_resampling.py --benchmark-enable`` runs the same cases under
  pytest-benchmark (``--benchmark-disable``, the project default, runs each case once as a test).

Every implementation starts from float64 log-weights, so each includes the exponentiation and
normalisation it needs: numpy = exp/cumsum/normalise + ``np.searchsorted`` on the CDF; particles =
``particles.resampling.exp_and_normalise`` + its numba scheme; glass_core = ``glass_core.resample``.
The "SMC step" row is a full bookkeeping step at N = 4096 called from Python: reweight by the
log-potentials, normalise, log-evidence increment, ESS, systematic resampling, ancestry update
(glass_core: ``SMCState.step`` with genealogy tracking on).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import timeit
from collections.abc import Callable

import glass_core as gc
import numpy as np

try:
    import particles.resampling as prs
except ImportError:  # pragma: no cover - particles is a test dependency
    prs = None

SIZES = (16, 4096, 65536, 1_000_000)
SCHEMES = ("systematic", "stratified", "multinomial", "residual")
STEP_N = 4096


def make_log_weights(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=n)


# --- plain numpy -------------------------------------------------------------------------------


def numpy_resample(lw: np.ndarray, scheme: str, rng: np.random.Generator) -> np.ndarray:
    n = lw.shape[0]
    w = np.exp(lw - lw.max())
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    if scheme == "systematic":
        u = (rng.random() + np.arange(n)) / n
    elif scheme == "stratified":
        u = (rng.random(n) + np.arange(n)) / n
    elif scheme == "multinomial":
        u = rng.random(n)
    else:
        raise ValueError(scheme)
    return np.minimum(np.searchsorted(cdf, u, side="right"), n - 1)


class NumpySMC:
    """The same bookkeeping as SMCState.step, written with numpy."""

    def __init__(self, n: int, seed: int) -> None:
        self.lw = np.full(n, -math.log(n))
        self.log_evidence = 0.0
        self.ess: list[float] = []
        self.genealogy: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def step(self, g: np.ndarray) -> np.ndarray:
        lw = self.lw + g
        m = lw.max()
        w = np.exp(lw - m)
        s = w.sum()
        self.log_evidence += m + math.log(s)
        self.ess.append(s * s / np.dot(w, w))
        n = lw.shape[0]
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        anc = np.minimum(np.searchsorted(cdf, (self.rng.random() + np.arange(n)) / n), n - 1)
        self.genealogy.append(anc)
        self.lw = np.full(n, -math.log(n))
        return anc


class ParticlesSMC:
    """The same bookkeeping with particles' Weights + systematic resampling."""

    def __init__(self, n: int) -> None:
        self.lw = np.full(n, -math.log(n))
        self.log_evidence = 0.0
        self.ess: list[float] = []
        self.genealogy: list[np.ndarray] = []

    def step(self, g: np.ndarray) -> np.ndarray:
        wgts = prs.Weights(lw=self.lw + g)
        self.log_evidence += prs.log_sum_exp(self.lw + g)
        self.ess.append(wgts.ESS)
        anc = prs.systematic(wgts.W)
        self.genealogy.append(anc)
        self.lw = np.full(self.lw.shape[0], -math.log(self.lw.shape[0]))
        return anc


# --- the cases ---------------------------------------------------------------------------------


def resample_cases(n: int, scheme: str) -> dict[str, Callable[[], object]]:
    lw = make_log_weights(n)
    rng = np.random.default_rng(1)
    cases: dict[str, Callable[[], object]] = {
        "glass_core": lambda: gc.resample(lw, scheme, seed=1),
    }
    if scheme != "residual":
        cases["numpy"] = lambda: numpy_resample(lw, scheme, rng)
    if prs is not None:
        fn = getattr(prs, scheme)
        cases["particles"] = lambda: fn(prs.exp_and_normalise(lw))
    return cases


def step_cases(n: int = STEP_N, steps_per_state: int = 200):
    """Stateful cases: each returns (make_state, step_fn); states are renewed between repeats so
    that the genealogy does not grow without bound."""
    g = make_log_weights(n, seed=3)

    def glass_make():
        return gc.SMCState(1, n, seeds=0, track_genealogy=True)

    cases = {
        "glass_core": (glass_make, lambda s: s.step(g, resample=True)),
        "numpy": (lambda: NumpySMC(n, 0), lambda s: s.step(g)),
    }
    if prs is not None:
        cases["particles"] = (lambda: ParticlesSMC(n), lambda s: s.step(g))
    return cases, steps_per_state


def best_time(fn: Callable[[], object], budget: float = 0.25, repeat: int = 5) -> float:
    fn()  # warm-up (numba compilation for particles)
    number = 1
    while True:
        t = timeit.timeit(fn, number=number)
        if t > budget / repeat or number >= 1 << 20:
            break
        number *= 4
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def best_step_time(make, step, steps: int, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        s = make()
        step(s)  # warm-up
        t = timeit.timeit(lambda s=s: step(s), number=steps)
        times.append(t / steps)
    return min(times)


def fmt(t: float | None) -> str:
    if t is None:
        return "—"
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    return f"{t * 1e3:.2f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{a / b:.3f}"


def run_table(schemes: tuple[str, ...] = SCHEMES, sizes: tuple[int, ...] = SIZES) -> str:
    lines = [
        "| case | N | glass_core | numpy | particles | glass/numpy | glass/particles |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    results: dict[tuple[str, int], dict[str, float]] = {}
    for scheme in schemes:
        for n in sizes:
            t = {k: best_time(f) for k, f in resample_cases(n, scheme).items()}
            results[(scheme, n)] = t
            g, nu, pa = t.get("glass_core"), t.get("numpy"), t.get("particles")
            lines.append(
                f"| resample {scheme} | {n:,} | {fmt(g)} | {fmt(nu)} | {fmt(pa)} "
                f"| {ratio(g, nu)} | {ratio(g, pa)} |"
            )
    cases, steps = step_cases()
    t = {k: best_step_time(mk, st, steps) for k, (mk, st) in cases.items()}
    results[("smc_step", STEP_N)] = t
    g, nu, pa = t.get("glass_core"), t.get("numpy"), t.get("particles")
    lines.append(
        f"| SMC bookkeeping step | {STEP_N:,} | {fmt(g)} | {fmt(nu)} | {fmt(pa)} "
        f"| {ratio(g, nu)} | {ratio(g, pa)} |"
    )
    sysr = results.get(("systematic", 1_000_000), {})
    targets = []
    if sysr:
        r_p = sysr["glass_core"] / sysr["particles"] if "particles" in sysr else float("nan")
        r_n = sysr["glass_core"] / sysr["numpy"]
        targets.append(
            f"- systematic, N = 1e6: glass/particles = {r_p:.3f} (target <= 0.5: "
            f"{'met' if r_p <= 0.5 else 'NOT met'}); glass/numpy = {r_n:.3f} (target <= 0.2: "
            f"{'met' if r_n <= 0.2 else 'NOT met'})"
        )
    step = results[("smc_step", STEP_N)]["glass_core"]
    targets.append(
        f"- SMC bookkeeping step, N = 4096, from Python: {step * 1e6:.1f} µs "
        f"(target < 10 µs: {'met' if step < 10e-6 else 'NOT met'})"
    )
    return "\n".join(lines) + "\n\n" + "\n".join(targets)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--sizes", default=",".join(str(n) for n in SIZES))
    args = ap.parse_args(argv)
    schemes = tuple(s for s in args.schemes.split(",") if s)
    sizes = tuple(int(float(s)) for s in args.sizes.split(",") if s)
    print(
        f"# glass_core resampling benchmark (python {platform.python_version()}, "
        f"numpy {np.__version__}, {platform.machine()}, glass_core {gc._core.__version__})\n"
    )
    print(run_table(schemes, sizes))
    sys.stdout.flush()


# --- pytest-benchmark entry points ---------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("n", SIZES)
    @pytest.mark.parametrize("scheme", SCHEMES)
    @pytest.mark.parametrize("impl", ["glass_core", "numpy", "particles"])
    def test_resample(benchmark, impl: str, scheme: str, n: int) -> None:
        cases = resample_cases(n, scheme)
        if impl not in cases:
            pytest.skip(f"{impl} has no {scheme} implementation here")
        fn = cases[impl]
        fn()  # warm-up / numba compile outside the timing
        idx = benchmark(fn)
        assert len(idx) == n

    @pytest.mark.parametrize("impl", ["glass_core", "numpy", "particles"])
    def test_smc_step(benchmark, impl: str) -> None:
        cases, _ = step_cases()
        if impl not in cases:
            pytest.skip(f"{impl} unavailable")
        make, step = cases[impl]
        state = make()
        step(state)
        # a fresh state per round keeps the genealogy bounded
        benchmark.pedantic(step, setup=lambda: ((make(),), {}), rounds=200, iterations=1)


if __name__ == "__main__":
    main()
