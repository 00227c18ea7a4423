"""Flax NNX modules: ResNet backbone, FPN, heads and the RetinaNet detector (forward only)."""

from retinanet_jax.models.retinanet import (
    ModelConfig,
    RetinaNet,
    abstract_model,
    build_model,
    construct_model,
)

__all__ = ['ModelConfig', 'RetinaNet', 'abstract_model', 'build_model', 'construct_model']
