"""Steer any diffusers flow pipeline, unchanged, with glass_core.

glass_core transitions run as a drop-in scheduler (``TransitionScheduler``,
``PCFlowScheduler``) and FK steering / best-of-N through the pipeline's
``callback_on_step_end`` (``steering_callback``). docs/steering_any_pipeline.md.

This package sits above ``transitions``, ``align`` and ``models``: nothing there imports it.
"""

from glass_core.diffusers.callback import SteeringCallback, steering_callback
from glass_core.diffusers.layouts import Layout, PackedLayout, flux_layout
from glass_core.diffusers.scheduler import PCFlowScheduler, TransitionScheduler

__all__ = [
    "Layout",
    "PCFlowScheduler",
    "PackedLayout",
    "SteeringCallback",
    "TransitionScheduler",
    "flux_layout",
    "steering_callback",
]
