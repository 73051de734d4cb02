"""Session-wide test settings."""

import torch

# One intra-op thread: the suite's statistical tests are small tensor ops, and on the 2-core CI
# machine two contending OpenMP threads are much slower than one.
torch.set_num_threads(1)
