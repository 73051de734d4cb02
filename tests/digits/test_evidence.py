"""Held-out judges and the paper-in-kind benchmark: energy distance against closed forms, the
held-out classifier's provenance and accuracy, equal-NFE transitions, and the quick benchmark run
end to end with checks a broken steering or metric would fail."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from glass_core.digits.assets import (
    DEFAULT_HELDOUT_DIR,
    HeldoutClassifier,
    load_heldout_classifier,
    load_real_digits,
)
from glass_core.digits.baselines import BASELINES
from glass_core.digits.evidence import baseline_methods, steering_methods, transition_for
from glass_core.metrics import energy_distance, mean_se
from glass_core.schedules import RectifiedFlow, uniform_grid

REPO = Path(__file__).resolve().parents[2]


def test_energy_distance_is_unbiased_under_the_null() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 4, generator=g), torch.randn(600, 4, generator=g)
    ed = energy_distance(x, y)
    assert abs(ed.value) < 4 * ed.se and ed.se > 0


def test_energy_distance_matches_the_closed_form_for_a_gaussian_shift() -> None:
    # X ~ N(mu, 1), Y ~ N(0, 1) in 1-D: E|X-Y| with X-Y ~ N(mu, 2), E|X-X'| = E|Y-Y'| = 2/sqrt(pi)
    mu, s = 1.0, math.sqrt(2.0)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * math.erf(
        mu / (s * math.sqrt(2))
    )
    exact = 2 * e_xy - 2 * 2 / math.sqrt(math.pi)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1500, 1, generator=g) + mu, torch.randn(20000, 1, generator=g)
    ed = energy_distance(x, y)
    # y's own sampling error (not in the jackknife s.e.) is about se * sqrt(1500 / 20000)
    assert abs(ed.value - exact) < 4 * ed.se * 1.1, (ed, exact)


def test_energy_distance_jackknife_se_matches_the_spread_over_repeats() -> None:
    g = torch.Generator().manual_seed(2)
    y = torch.randn(300, 3, generator=g)  # fixed reference, as in the benchmark
    draws = [energy_distance(torch.randn(80, 3, generator=g) + 0.5, y) for _ in range(200)]
    spread = torch.tensor([d.value for d in draws]).std().item()
    mean_se_ = sum(d.se for d in draws) / len(draws)
    # the sd of 200 estimates is itself known to about 1/sqrt(2*199) = 5 %; jackknife bias small
    assert 0.75 < mean_se_ / spread < 1.3, (mean_se_, spread)


def test_energy_distance_v_statistic_has_the_closed_form_bias_under_the_null() -> None:
    # 1-D N(0, 1) against itself: E|X-X'| = 2/sqrt(pi), and the V-statistic's within-set means keep
    # the n (m) zero diagonal terms, so E[V] = 2/sqrt(pi) * (1/n + 1/m) while E[U] = 0.
    n, m, reps = 20, 30, 400
    g = torch.Generator().manual_seed(3)
    v = torch.tensor(
        [
            energy_distance(
                torch.randn(n, 1, generator=g), torch.randn(m, 1, generator=g), unbiased=False
            ).value
            for _ in range(reps)
        ]
    )
    bias = 2 / math.sqrt(math.pi) * (1 / n + 1 / m)
    assert abs(v.mean().item() - bias) < 4 * v.std().item() / math.sqrt(reps), (v.mean(), bias)
    assert (v >= 0).all()


def test_energy_distance_v_statistic_is_the_all_pairs_mean() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = (
        torch.randn(7, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )

    def mean_dist(a: torch.Tensor, b: torch.Tensor) -> float:
        return sum(float((ai - bj).norm()) for ai in a for bj in b) / (len(a) * len(b))

    direct = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
    assert energy_distance(x, y, unbiased=False).value == pytest.approx(direct, rel=1e-12)


def test_energy_distance_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="energy_distance"):
        energy_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="mean_se"):
        mean_se(torch.zeros(0))


def _load_script(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: A retrain on another CPU / BLAS converges to the same optimum only up to rounding (L-BFGS's
#: path depends on the summation order: on an AMD EPYC a bias differs from the shipped one by 3e-4).
#: What must hold everywhere: the test accuracy within 2 of the 360 test images, and the same
#: prediction on >= 99.5 % of them (at most 1 of 360 may flip).
RETRAIN_ACCURACY_TOL = 2 / 360
RETRAIN_MIN_AGREEMENT = 0.995


def test_heldout_classifier_is_the_recorded_one_and_retrains_to_the_same_predictions() -> None:
    """Provenance by hashes (bit for bit: the shipped bytes and the script that wrote them); the
    retrain by what does not depend on a CPU's rounding: accuracy and predictions on the split."""
    from sklearn.model_selection import train_test_split

    prov = json.loads((DEFAULT_HELDOUT_DIR / "provenance.json").read_text())
    assert prov["script"] == "scripts/train_heldout_classifier.py"
    script = REPO / prov["script"]
    assert hashlib.sha256(script.read_bytes()).hexdigest() == prov["script_sha256"], (
        "the training script changed since the shipped weights were written; re-run it"
    )
    for rel, digest in prov["files_sha256"].items():
        assert hashlib.sha256((DEFAULT_HELDOUT_DIR / rel).read_bytes()).hexdigest() == digest
    weight, bias, metrics = _load_script("train_heldout_classifier").train(
        prov["seed"], prov["args"]["C"], prov["args"]["max_iter"]
    )
    retrained = HeldoutClassifier(torch.from_numpy(weight), torch.from_numpy(bias))
    shipped = load_heldout_classifier()
    x, y = load_real_digits()  # the script's split: stratified 20 %, random_state = its seed
    index = torch.arange(len(y)).numpy()
    _, test = train_test_split(index, test_size=0.2, stratify=y.numpy(), random_state=prov["seed"])
    x_te, y_te = x[test], y[test]
    assert len(test) == prov["metrics"]["num_test"] == 360
    pred_new, pred_old = retrained.probs(x_te).argmax(-1), shipped.probs(x_te).argmax(-1)
    agreement = (pred_new == pred_old).double().mean().item()
    assert agreement >= RETRAIN_MIN_AGREEMENT, agreement
    shipped_acc = (pred_old == y_te).double().mean().item()
    # the shipped weights on the recorded split: one image may flip where two classes tie to
    # rounding on another CPU
    assert shipped_acc == pytest.approx(prov["metrics"]["test_accuracy"], abs=1 / 360 + 1e-12)
    assert metrics["test_accuracy"] == pytest.approx(shipped_acc, abs=RETRAIN_ACCURACY_TOL)


def test_heldout_classifier_recognises_real_digits_and_not_noise() -> None:
    x, y = load_real_digits()
    clf = load_heldout_classifier()
    p = clf.probs(x)
    assert torch.allclose(p.sum(-1), torch.ones(len(x), dtype=torch.float64))
    assert (p.argmax(-1) == y).double().mean() > 0.97  # 80 % of these were its training data
    noise = torch.rand(512, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert clf.probs(noise).max(-1).values.mean() < p.max(-1).values.mean() - 0.1
    with pytest.raises(ValueError, match="shape"):
        clf.probs(torch.zeros(2, 64))


@pytest.mark.parametrize("nfe", [10, 20, 50])
def test_transitions_spend_the_budget(nfe: int) -> None:
    """Euler kernels spend exactly the budget; higher-order GLASS solvers at most the budget."""
    from glass_core.transitions import glass

    sched, grid = RectifiedFlow(), uniform_grid(5)

    def spent(tr) -> int:
        return sum(tr.nfe(sched, grid[i], grid[i + 1]) for i in range(len(grid) - 1))

    for kernel in ("ode", "sde"):
        assert spent(transition_for(kernel, nfe, 5)) == nfe
    for rho in ("ddpm", 0.4):
        assert spent(transition_for("glass", nfe, 5, rho=rho, solver="euler")) == nfe
        for solver in glass.SOLVERS:
            used = spent(transition_for("glass", nfe, 5, rho=rho, solver=solver))
            assert nfe - 5 <= used <= nfe, (solver, used)
    with pytest.raises(ValueError, match="multiple"):
        transition_for("sde", 12, 5)


@pytest.mark.slow
def test_bench_paper_quick_mode(tmp_path: Path) -> None:
    """The quick benchmark end to end: every row and cell, and the effects it must show whatever
    the ranking between methods (steering raises both the reward and the held-out probability
    above no steering; real digits against real digits score an energy distance near 0, real
    digits + noise clearly worse; the SDE ends clean)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benches/bench_paper.py"),
            "--quick",
            "--tables",
            "fk,sampling",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Table 1 in kind" in proc.stdout and "Tables 3/4 in kind" in proc.stdout
    res = json.loads((tmp_path / "paper_quick.json").read_text())
    cfg = res["config"]
    fk = res["fk"]
    keys = {m.key for m in steering_methods(lookahead=False) + baseline_methods()}
    assert keys <= {r["method"] for r in fk}
    for key in ("fk_sde", "fk_glass_ddpm", "fk_glass_04"):
        gaps: dict[str, list[tuple[float, float]]] = {"reward": [], "heldout_p_target": []}
        for nfe in cfg["budgets"]:
            rows = {(r["method"], r["particles"]): r for r in fk if r["nfe_budget"] == nfe}
            flow = rows[("flow", 1)]
            for n in cfg["particles"]:
                r = rows[(key, n)]
                assert r["groups"] == cfg["groups"] and nfe - 5 <= r["nfe"] <= nfe
                for metric, cells in gaps.items():
                    d = r[metric]["mean"] - flow[metric]["mean"]
                    cells.append((d, math.hypot(r[metric]["se"], flow[metric]["se"])))
        # pooled over the cells (independent runs), the gap must exceed 3 of its standard errors
        for metric, cells in gaps.items():
            mean = sum(d for d, _ in cells) / len(cells)
            se = math.sqrt(sum(e * e for _, e in cells)) / len(cells)
            assert mean > 3 * se, (key, metric, cells)
    data, noisy, *samplers = res["sampling"]
    assert data["row"] == "real digits (other half)" and noisy["row"].startswith("real digits +")
    for metric in ("clamped", "features"):
        assert abs(data[metric]["mean"]) < 3 * data[metric]["se"], metric
        gap = noisy[metric]["mean"] - data[metric]["mean"]
        assert gap > 2 * math.hypot(noisy[metric]["se"], data[metric]["se"]), metric
    assert {r["nfe_budget"] for r in samplers} == set(cfg["budgets"])
    rows = {r["row"] for r in samplers}
    assert {BASELINES[name][2] for name in BASELINES} <= rows and "ODE pc" in rows
    for r in samplers:
        if r["row"].startswith("glass_core SDE"):
            assert r["outside"] < 0.01, r  # the SDE's last substep returns the denoised estimate
    assert (tmp_path / "paper_tables_quick.md").read_text().count("|") > 100
