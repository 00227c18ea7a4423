"""Flax NNX modules: ResNet backbone, FPN, heads and the RetinaNet detector (forward only), and
the import of torchvision state dicts into them (torchvision_weights.py)."""

from retinanet_jax.models.retinanet import ModelConfig, RetinaNet, build_retinanet

__all__ = ['ModelConfig', 'RetinaNet', 'build_retinanet']
