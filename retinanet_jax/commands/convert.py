"""Convert a torchvision RetinaNet state dict into a model directory.

  python -m retinanet_jax convert --input=F --variant=v1 --output=DIR [--num_classes=N] \
      [--norm=frozen|batch]

The model directory is what predict, evaluate, analyze and export take;
models/torchvision_weights.py does the work.
"""

import dataclasses

from absl import flags

from retinanet_jax.checkpoint import save_model
from retinanet_jax.models import ModelConfig
from retinanet_jax.models.torchvision_weights import load_state_dict, retinanet_from_torchvision


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        'input',
        None,
        'torchvision RetinaNet state dict (.pth, .safetensors, .npz)',
        flag_values=fv,
    )
    flags.DEFINE_enum(
        'variant',
        'v1',
        ['v1', 'v2'],
        'retinanet_resnet50_fpn (v1) or _v2',
        flag_values=fv,
    )
    flags.DEFINE_integer(
        'num_classes', None, 'classes of the new model (default: as the file)', flag_values=fv
    )
    flags.DEFINE_enum(
        'norm',
        'frozen',
        ['frozen', 'batch'],
        'backbone batch norm: frozen, or trainable',
        flag_values=fv,
    )
    flags.DEFINE_string('output', None, 'directory to write the model to', flag_values=fv)
    flags.mark_flags_as_required(['input', 'output'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    model = retinanet_from_torchvision(
        load_state_dict(f.input), f.variant, f.num_classes, norm=f.norm
    )
    preset = ModelConfig.torchvision_v1 if f.variant == 'v1' else ModelConfig.torchvision_v2
    config = dataclasses.replace(preset(model.num_classes), norm=f.norm)
    out = save_model(f.output, model, config)
    print(f'saved {f.variant} RetinaNet ({config.num_classes} classes) to {out}')
