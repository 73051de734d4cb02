"""Rewards.

The protocol, validation, and closed-form rewards. The model-based adapters (CLIP, PickScore, HPS,
aesthetic, ImageReward; ``rewards.loading.load_reward``) and the image/latent wrappers
(``rewards.adapters``) are separate modules, imported only when used (they need transformers and
friends).
"""

from glass_core.rewards.base import Reward, check_rewards, evaluate_reward
from glass_core.rewards.closed_form import LinearReward, QuadraticReward

__all__ = ["LinearReward", "QuadraticReward", "Reward", "check_rewards", "evaluate_reward"]
