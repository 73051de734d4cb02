"""Pure-function tests of the migration plan (no processes): balance, correctness, minimality."""

import itertools

import numpy as np
import pytest
from glass_core.align.distributed.migration import (
    contiguous_layout,
    minimal_moves,
    plan_migration,
)
from glass_core.errors import InvalidInputError
from glass_core.weights import resample


def apply_plan(plan, layout, data):
    """Move per-slot `data` like the ranks would: local arrays, then read back by slot."""
    local_old = data[layout]  # [W, n]: what each rank holds before
    local_new = local_old[plan.source_rank, plan.source_row]
    out = np.empty_like(data)
    out[plan.new_layout] = local_new
    return out


def random_layout(rng, world, n):
    return rng.permutation(world * n).reshape(world, n)


@pytest.mark.parametrize("world,n", [(1, 8), (2, 4), (4, 16), (8, 3)])
@pytest.mark.parametrize("scheme", ["systematic", "multinomial", "residual"])
def test_plan_is_balanced_correct_and_minimal(world, n, scheme):
    rng = np.random.default_rng(world * 100 + n)
    for trial in range(20):
        layout = contiguous_layout(world * n, world) if trial == 0 else random_layout(rng, world, n)
        lw = rng.normal(scale=2.0, size=world * n)
        anc = resample(lw, scheme, seed=trial)
        plan = plan_migration(layout, anc)
        assert plan.new_layout.shape == (world, n)  # exactly n per rank
        assert np.array_equal(np.sort(plan.new_layout.ravel()), np.arange(world * n))
        data = rng.normal(size=world * n)
        np.testing.assert_array_equal(apply_plan(plan, layout, data), data[anc])
        assert plan.moved == minimal_moves(layout, anc)
        assert plan.transfers <= plan.moved
        assert (np.diff(plan.new_layout, axis=1) > 0).all()  # sorted within rank


def test_identity_moves_nothing():
    layout = random_layout(np.random.default_rng(0), 4, 5)
    plan = plan_migration(layout, np.arange(20))
    assert plan.moved == 0 and plan.transfers == 0
    assert (plan.source_rank == np.arange(4)[:, None]).all()


def test_all_offspring_of_one_particle():
    # slot 5 (rank 1 of 2, n=4) takes everything: rank 1 keeps 4 copies, rank 0 receives it once
    layout = contiguous_layout(8, 2)
    plan = plan_migration(layout, np.full(8, 5))
    assert plan.moved == 4
    assert plan.transfers == 1
    np.testing.assert_array_equal(plan.recv_rows(0, 1), [1])


def test_brute_force_minimality_small():
    """No balanced assignment of new slots to ranks moves fewer than the plan (W=2, n=3)."""
    rng = np.random.default_rng(1)
    world, n = 2, 3
    for _ in range(30):
        layout = random_layout(rng, world, n)
        anc = rng.integers(0, world * n, size=world * n)
        owner = np.empty(world * n, dtype=int)
        owner[layout.ravel()] = np.repeat(np.arange(world), n)
        best = min(
            sum(owner[anc[i]] != (0 if i in on_zero else 1) for i in range(world * n))
            for on_zero in itertools.combinations(range(world * n), n)
        )
        assert plan_migration(layout, anc).moved == best


def test_at_most_world_minus_one_messages():
    # overflow (ordered by sender) fills free rows (ordered by receiver) north-west-corner style,
    # and a rank is either a sender or a receiver, so at most W - 1 rank pairs exchange data
    rng = np.random.default_rng(2)
    for trial in range(20):
        layout = random_layout(rng, 8, 8)
        anc = resample(rng.normal(scale=3.0, size=64), "multinomial", seed=trial)
        plan = plan_migration(layout, anc)
        pairs = sum(plan.recv_rows(d, s).size > 0 for d in range(8) for s in range(8) if d != s)
        assert pairs <= 7


def test_bad_inputs_name_the_argument():
    with pytest.raises(InvalidInputError, match="num_particles"):
        contiguous_layout(10, 4)
    with pytest.raises(InvalidInputError, match="ancestors"):
        plan_migration(contiguous_layout(8, 2), np.arange(7))
    with pytest.raises(InvalidInputError, match="ancestors"):
        plan_migration(contiguous_layout(8, 2), np.full(8, 8))
    with pytest.raises(InvalidInputError, match="layout"):
        plan_migration(np.zeros((2, 4), dtype=np.int64), np.arange(8))
