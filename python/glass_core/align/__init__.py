"""Reward alignment: best-of-N, Feynman-Kac steering and reward guidance over any transition."""

from glass_core.align.best_of_n import best_of_n
from glass_core.align.distributed import RankFailedError, Sharding
from glass_core.align.fk import FKSampler, fk_steering
from glass_core.align.fk_state import FKState
from glass_core.align.guidance import GuidedDenoiser, guided, reward_guidance
from glass_core.align.potentials import POTENTIALS, Diff, Lookahead, Max, Potential, Sum
from glass_core.align.results import BestOfNResult, FKResult, GuidanceResult, SamplingResult
from glass_core.align.value import ValueEstimate, value_estimate

__all__ = [
    "POTENTIALS",
    "BestOfNResult",
    "Diff",
    "FKResult",
    "FKSampler",
    "FKState",
    "GuidanceResult",
    "GuidedDenoiser",
    "Lookahead",
    "Max",
    "Potential",
    "RankFailedError",
    "SamplingResult",
    "Sharding",
    "Sum",
    "ValueEstimate",
    "best_of_n",
    "fk_steering",
    "guided",
    "reward_guidance",
    "value_estimate",
]
