"""The shared statistical checks (tests/stat_checks.py) have power: each must reject a clearly
wrong distribution, and the energy test keeps its level."""

import torch
from stat_checks import Z, assert_moments, energy_pvalue, moment_errors


def test_moment_check_has_power():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100_000, 3, generator=g, dtype=torch.float64)
    assert_moments(x, torch.zeros(3), torch.eye(3), what="exact")
    zm, _ = moment_errors(x + 0.03, torch.zeros(3), torch.eye(3))
    assert zm.abs().max() > Z  # a 0.03 shift is ~9.5 standard errors at N=1e5
    _, zc = moment_errors(x * 1.02, torch.zeros(3), torch.eye(3))
    assert zc.abs().max() > Z  # 4% variance error


def test_energy_test_has_power_and_level():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5000, 2, generator=g, dtype=torch.float64)
    y = torch.randn(5000, 2, generator=g, dtype=torch.float64)
    assert energy_pvalue(x, y) > 0.01
    assert energy_pvalue(x, y * 1.3) < 0.01
