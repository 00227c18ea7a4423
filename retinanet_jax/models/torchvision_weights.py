"""Import torchvision weights: ResNet classification state dicts and whole RetinaNets.

  retinanet_from_torchvision(state_dict, variant='v1' | 'v2', num_classes=None) -> RetinaNet
  load_resnet_from_torchvision(model, state_dict)   # ImageNet backbone into a built model
  load_state_dict(path) -> {name: np.ndarray}       # .pth / .pt (weights_only), .safetensors, .npz

Name mapping (ours -> torchvision), layouts OIHW -> HWIO for convolution kernels:
  backbone.X                 -> backbone.body.X   (ResNet; `prefix=''` for classification files)
  backbone.*.downsample.conv -> *.downsample.0,  downsample.bn -> *.downsample.1
  fpn.inner_blocks.i         -> backbone.fpn.inner_blocks.i.0  (likewise layer_blocks)
  fpn.inner_norms.i          -> backbone.fpn.inner_blocks.i.1  (FPN norm; likewise layer_norms)
  fpn.p6 / fpn.p7            -> backbone.fpn.extra_blocks.p6 / p7
  classification_head.convs.i / norms.i / output
                             -> head.classification_head.conv.i.0 / .1 / cls_logits
  regression_head.convs.i / norms.i / output
                             -> head.regression_head.conv.i.0 / .1 / bbox_reg
  kernel, scale, bias, mean, var -> weight, weight, bias, running_mean, running_var
torch is imported only to read .pth files (torch alone is safe after tensorflow; torchvision is
not, and is never imported here). The command: commands/convert.py.
"""

import dataclasses
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax.errors import MissingFile, UserError
from retinanet_jax.models import ModelConfig, RetinaNet, build_retinanet
from retinanet_jax.models.heads import class_prior_bias
from retinanet_jax.models.layers import conv

_MODULE_RULES = [
    (r'^backbone\.(.*)downsample\.conv$', r'{body}\1downsample.0'),
    (r'^backbone\.(.*)downsample\.bn$', r'{body}\1downsample.1'),
    (r'^backbone\.(.*)$', r'{body}\1'),
    (r'^fpn\.(inner|layer)_blocks\.(\d+)$', r'backbone.fpn.\1_blocks.\2.0'),
    (r'^fpn\.(inner|layer)_norms\.(\d+)$', r'backbone.fpn.\1_blocks.\2.1'),
    (r'^fpn\.(p6|p7)$', r'backbone.fpn.extra_blocks.\1'),
    (r'^classification_head\.convs\.(\d+)$', r'head.classification_head.conv.\1.0'),
    (r'^classification_head\.norms\.(\d+)$', r'head.classification_head.conv.\1.1'),
    (r'^classification_head\.output$', r'head.classification_head.cls_logits'),
    (r'^regression_head\.convs\.(\d+)$', r'head.regression_head.conv.\1.0'),
    (r'^regression_head\.norms\.(\d+)$', r'head.regression_head.conv.\1.1'),
    (r'^regression_head\.output$', r'head.regression_head.bbox_reg'),
]
_LEAF_NAMES = {
    'kernel': 'weight',
    'scale': 'weight',
    'bias': 'bias',
    'mean': 'running_mean',
    'var': 'running_var',
}
# torchvision keys that carry no weights of ours.
_IGNORED = re.compile(r'(^|\.)num_batches_tracked$|^fc\.(weight|bias)$')
CLASS_OUTPUT_KEYS = (
    'head.classification_head.cls_logits.weight',
    'head.classification_head.cls_logits.bias',
)


def torchvision_name(path: tuple, body_prefix: str = 'backbone.body.') -> str:
    """Our flat-state path, e.g. ('backbone', 'layer1', 0, 'conv1', 'kernel'), -> torch key."""
    module = '.'.join(str(p) for p in path[:-1])
    for pattern, replacement in _MODULE_RULES:
        if re.match(pattern, module):
            module = re.sub(pattern, replacement.replace('{body}', body_prefix), module)
            break
    return f'{module}.{_LEAF_NAMES[path[-1]]}'


def _to_ours(name: str, value, leaf: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if leaf == 'kernel':
        if array.ndim != 4:
            raise UserError(f'{name}: expected a 4-d OIHW conv weight, got shape {array.shape}')
        array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    return array


def load_into(
    module: nnx.Module,
    state_dict: Mapping[str, object],
    *,
    body_prefix: str = 'backbone.body.',
    skip: tuple[str, ...] = (),
    path_prefix: tuple = (),
) -> list[str]:
    """Copies torchvision weights into `module` (concrete or from nnx.eval_shape), in place.

    Every variable of `module` must find a key of matching shape, and every key of the state
    dict must be used (except num_batches_tracked, a classifier `fc`, and names in `skip`);
    otherwise a ValueError lists all offending keys. Returns the keys that were skipped.
    """
    state_dict = {k: v for k, v in state_dict.items() if not _IGNORED.search(k)}
    flat = nnx.to_flat_state(nnx.state(module))
    missing, mismatched, skipped, updates, used = [], [], [], [], set()
    for path, variable in flat:
        name = torchvision_name(path_prefix + tuple(path), body_prefix)
        if name in skip:
            skipped.append(name)
            used.add(name)
            continue
        if name not in state_dict:
            missing.append(name)
            continue
        used.add(name)
        value = _to_ours(name, state_dict[name], path[-1])
        if value.shape != tuple(variable.shape):
            mismatched.append(f'{name}: file {value.shape}, model {tuple(variable.shape)}')
            continue
        updates.append((path, variable.replace(jnp.asarray(value))))
    unexpected = sorted(set(state_dict) - used)
    problems = []
    if missing:
        problems.append(f'missing from the state dict ({len(missing)}): {missing[:20]}')
    if mismatched:
        problems.append(f'wrong shapes ({len(mismatched)}): {mismatched[:20]}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {unexpected[:20]}')
    if problems:
        raise UserError(
            'state dict does not match the model (another architecture, variant or depth?):\n  '
            + '\n  '.join(problems)
        )
    nnx.update(module, nnx.from_flat_state(updates))
    return skipped


def load_resnet_from_torchvision(model: RetinaNet, state_dict: Mapping[str, object]) -> None:
    """Loads an ImageNet torchvision ResNet state dict (conv1.weight, layer1.0..., fc.*) into
    `model.backbone`; the classifier `fc` is not used."""
    prefixed = any(k.startswith('backbone.body.') for k in state_dict)
    load_into(
        model.backbone,
        state_dict,
        body_prefix='backbone.body.' if prefixed else '',
        path_prefix=('backbone',),
    )


def retinanet_from_torchvision(
    state_dict: Mapping[str, object],
    variant: str = 'v1',
    num_classes: int | None = None,
    dtype: str = 'float32',
    norm: str = 'frozen',
) -> RetinaNet:
    """A RetinaNet holding a torchvision retinanet_resnet50_fpn (v1) or _v2 state dict.

    `norm` 'frozen' (default): the backbone's batch norms become FrozenBatchNorm, as in
    torchvision's pretrained models. 'batch': trainable BatchNorm (stages after freeze_at 2):
    the running statistics become its batch statistics, the affine terms trainable parameters;
    the model comes back in training mode (`model.eval()` to predict as torchvision's `eval()`).
    With `num_classes` different from the file's, everything but the final class conv is
    loaded; that conv is freshly initialised (prior bias) and a warning says so.
    """
    if variant not in ('v1', 'v2'):
        raise UserError(f"variant must be 'v1' or 'v2', got {variant!r}")
    if CLASS_OUTPUT_KEYS[1] not in state_dict:
        raise UserError(
            f'not a torchvision RetinaNet state dict: no {CLASS_OUTPUT_KEYS[1]!r} '
            f'(first keys: {list(state_dict)[:5]})'
        )
    file_classes = np.asarray(state_dict[CLASS_OUTPUT_KEYS[1]]).shape[0] // 9
    num_classes = file_classes if num_classes is None else num_classes
    preset = ModelConfig.torchvision_v1 if variant == 'v1' else ModelConfig.torchvision_v2
    if norm not in ('frozen', 'batch'):
        raise UserError(f"norm must be 'frozen' or 'batch' for torchvision weights, got {norm!r}")
    config = dataclasses.replace(preset(num_classes), dtype=dtype, norm=norm)
    model = nnx.eval_shape(lambda: build_retinanet(config))
    skip = CLASS_OUTPUT_KEYS if num_classes != file_classes else ()
    skipped = load_into(model, state_dict, skip=skip)
    if skipped:
        logging.warning(
            'retinanet_from_torchvision: the file has %d classes, the model %d; not loaded '
            '(freshly initialised): %s',
            file_classes,
            num_classes,
            skipped,
        )
        model.classification_head.output = conv(
            config.fpn_width,
            9 * num_classes,
            3,
            kernel_init=nnx.initializers.normal(0.01),
            bias_init=nnx.initializers.constant(class_prior_bias(config.prior_probability)),
            dtype=jnp.dtype(dtype),
            rngs=nnx.Rngs(0),
        )
    return model


TORCH_SUFFIXES = ('.pth', '.pt', '.bin')  # read with torch.load


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a state dict as numpy arrays: .pth / .pt (torch.load with weights_only=True, never
    arbitrary unpickling), .safetensors, or .npz (allow_pickle=False)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f'state dict file not found: {path}')
    suffix = path.suffix.lower()
    try:
        if suffix in TORCH_SUFFIXES:
            import torch

            data = torch.load(path, map_location='cpu', weights_only=True)
            for wrapper in ('model', 'state_dict'):
                if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
                    data = data[wrapper]
            if not isinstance(data, dict):
                raise UserError(f'expected a dict of tensors, found {type(data).__name__}')
            return {k: v.detach().cpu().numpy() for k, v in data.items() if hasattr(v, 'numpy')}
        if suffix == '.safetensors':
            from safetensors.numpy import load_file

            return dict(load_file(path))
        if suffix == '.npz':
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise UserError(f'cannot read state dict {path}: {e}') from e
    raise UserError(f'{path}: unknown state-dict format {suffix!r} (use .pth, .safetensors, .npz)')
