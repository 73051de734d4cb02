"""The digits demo built on the library.

The embedded 8x8-digits model, rewards and held-out judge (``assets``), the steering-method
definitions and measurement cell behind the demo and ``benches/bench_paper.py`` (``evidence``),
the diffusers baselines (``baselines``), the unsteered realism rows and tables of
``benches/bench_baselines.py`` and the paper bench's Tables 3/4 (``unsteered``), and the demo
runner (``demo``) with its configuration (``config``).

The library core (align, transitions, models, rewards, schedules, steering) never imports it.
Submodules load on import, not here, so ``assets`` stays loadable on its own.
"""
