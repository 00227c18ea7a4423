"""Shared test setup.

torch must be imported before tensorflow in one process (tensorflow first segfaults inside
triton), so it is imported here, before any test module can pull tensorflow in; torchvision
too, since torchvision.ops imports torch._dynamo and with it triton, which torch alone does
not (running test_data.py before test_models.py alone crashed that way).
"""

import torch
import torchvision
import torchvision.ops  # noqa: F401

torch.set_num_threads(2)
