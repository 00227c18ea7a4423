"""`python -m retinanet_jax.commands.convert --input=F --variant=v1 --output=DIR [--num_classes=N]
[--norm=frozen|batch]`: a torchvision RetinaNet state dict -> a model directory that predict,
evaluate, export and training (init.model) take (torchvision_weights.py does the work)."""

import dataclasses

from absl import app, flags
from absl import logging as absl_logging

from retinanet_jax.checkpoint import save_model
from retinanet_jax.models import ModelConfig
from retinanet_jax.models.torchvision_weights import load_state_dict, retinanet_from_torchvision


def main(argv) -> None:
    """`python -m retinanet_jax.commands.convert --input=F --variant=v1 --output=DIR`"""
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    f = flags.FLAGS
    model = retinanet_from_torchvision(
        load_state_dict(f.input), f.variant, f.num_classes, norm=f.norm
    )
    preset = ModelConfig.torchvision_v1 if f.variant == 'v1' else ModelConfig.torchvision_v2
    config = dataclasses.replace(preset(model.num_classes), norm=f.norm)
    out = save_model(f.output, model, config)
    print(f'saved {f.variant} RetinaNet ({config.num_classes} classes) to {out}')


def define_flags() -> None:
    flags.DEFINE_string(
        'input', None, 'torchvision RetinaNet state dict (.pth, .safetensors, .npz)'
    )
    flags.DEFINE_enum('variant', 'v1', ['v1', 'v2'], 'retinanet_resnet50_fpn (v1) or _v2')
    flags.DEFINE_integer('num_classes', None, 'classes of the new model (default: as the file)')
    flags.DEFINE_enum(
        'norm', 'frozen', ['frozen', 'batch'], 'backbone batch norm: frozen, or trainable'
    )
    flags.DEFINE_string('output', None, 'directory to write the model to')
    flags.mark_flags_as_required(['input', 'output'])


if __name__ == '__main__':
    define_flags()
    app.run(main)
