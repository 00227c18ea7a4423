"""RetinaNet in JAX and Flax NNX.

Modules, bottom up: boxes -> anchors, matching -> losses; models/ (nnx) -> convert, checkpoint.
"""

__version__ = '0.1.0'
