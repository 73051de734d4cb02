"""Rewards: the protocol, validation, and closed-form rewards (model-based rewards live in
sibling modules owned by the diffusers work stream and are imported lazily by their users)."""

from glass_core.rewards.base import Reward, check_rewards, evaluate_reward
from glass_core.rewards.closed_form import LinearReward, QuadraticReward

__all__ = ["LinearReward", "QuadraticReward", "Reward", "check_rewards", "evaluate_reward"]
