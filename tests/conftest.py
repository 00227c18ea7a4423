"""Shared test setup.

torch must be imported before tensorflow in one process (tensorflow first segfaults inside
triton), so it is imported here, before any test module can pull tensorflow in.
"""

import torch

torch.set_num_threads(2)
