"""Reward alignment over any transition.

Best-of-N, Feynman-Kac steering, reward guidance, tempered SMC, twisted proposals, value
decoding and beam search.
"""

from glass_core.align._search import SearchResult
from glass_core.align.beam import beam_search
from glass_core.align.best_of_n import best_of_n
from glass_core.align.distributed import RankFailedError, Sharding
from glass_core.align.fk import FKSampler, fk_steering
from glass_core.align.fk_state import FKState
from glass_core.align.guidance import GuidedDenoiser, guided, reward_guidance
from glass_core.align.potentials import POTENTIALS, Diff, Lookahead, Max, Potential, Sum
from glass_core.align.results import BestOfNResult, FKResult, GuidanceResult, SamplingResult
from glass_core.align.tempered import TemperedResult, TemperedSMCSampler, tempered_smc
from glass_core.align.twisted import TwistedFKSampler
from glass_core.align.value import ValueEstimate, value_estimate
from glass_core.align.value_decoding import value_decoding

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
    "SearchResult",
    "Sharding",
    "Sum",
    "TemperedResult",
    "TemperedSMCSampler",
    "TwistedFKSampler",
    "ValueEstimate",
    "beam_search",
    "best_of_n",
    "fk_steering",
    "guided",
    "reward_guidance",
    "tempered_smc",
    "value_decoding",
    "value_estimate",
]
