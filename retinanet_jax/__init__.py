"""RetinaNet in JAX and Flax NNX.

Modules, bottom up: boxes -> anchors, matching -> losses.
"""

__version__ = '0.1.0'
