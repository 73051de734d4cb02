"""No lock is held while calling back into Python: SMCState.step converts its input (which may run
arbitrary Python: ``__array__``, a torch subclass's ``__torch_function__``) before it locks the
state, so that code may read the same state (issue 23, item 9). Each case runs in a subprocess
with a timeout, since the bug is a deadlock that ignores Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# importing numpy/torch takes seconds on a loaded machine; a deadlock never ends
TIMEOUT_S = 120

NUMPY_CASE = """
import numpy as np
from glass_core._core import SMCState

st = SMCState(1, 4, seeds=0)
seen = []

class ReadsState:
    def __array__(self, dtype=None, copy=None):
        seen.append(st.log_weights.copy())  # reads the state being stepped
        return np.array([0.0, 1.0, 2.0, 3.0])

out = st.step(ReadsState())
assert len(seen) == 1 and np.allclose(seen[0], -np.log(4.0)), seen
assert st.num_steps == 1 and out.ess.shape == (1,)
print("ok")
"""

TORCH_CASE = """
import numpy as np
import torch
from glass_core._core import SMCState

st = SMCState(1, 4, seeds=0)
reads = []

class Spy(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        reads.append(st.num_steps + float(st.log_weights.sum()))  # reads the state being stepped
        return super().__torch_function__(func, types, args, kwargs or {})

x = torch.tensor([0.0, 1.0, 2.0, 3.0]).as_subclass(Spy)
st.step(x)
assert reads and st.num_steps == 1
print("ok")
"""


@pytest.mark.parametrize(
    "source", [NUMPY_CASE, TORCH_CASE], ids=["__array__", "__torch_function__"]
)
def test_step_input_that_reads_the_state_does_not_deadlock(source: str) -> None:
    if "torch" in source:
        pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
