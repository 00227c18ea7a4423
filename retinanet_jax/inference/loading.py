"""A trained model, ready to predict and evaluate, from any of the places a model lives
(model_path.resolve reads the path).

  predictor = load_predictor(path)   # a training run (RUN, RUN:best), a model directory or a
                                     # torchvision state dict file
  predictor = load_run(workdir, weights='auto', best=False)
  model, names = load_detector(path)  # the nnx model and its class names (fine-tuning)

What each kind gives:
  a training run        its checkpoint's model (EMA weights where it keeps them, `weights`),
                        input size, anchors, post-processing, classes and settings
  a model directory     (model_config.json + state/, from the convert command)
  a torchvision state dict   (retinanet_resnet50_fpn(_v2) .pth / .safetensors / .npz, `variant`)
The last two are torchvision models: torchvision's anchors and resizing (short side
`short_side`, long side at most `max_side`, on a static canvas of max_side rounded up to 32),
class names by class count (91: torchvision's COCO labels, i.e. COCO category ids) and 100
detections per image (torchvision keeps 300; COCO's AP counts the best 100 of each image).
Models with trainable batch norm predict in eval mode (running statistics).
"""

import dataclasses
import json
from pathlib import Path

import jax
from flax import nnx

from retinanet_jax import checkpoint, sharding
from retinanet_jax import settings as settings_lib
from retinanet_jax.data import label_maps
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.errors import MissingFile, UserError
from retinanet_jax.inference import model_path
from retinanet_jax.inference.predictor import Predictor, eval_graphdef
from retinanet_jax.models import ModelConfig, RetinaNet, build_retinanet, torchvision_weights
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops import postprocess
from retinanet_jax.ops.losses import LossConfig


def load_predictor(
    model: str | Path,
    variant: str = 'v1',
    short_side: int = 800,
    max_side: int = 1333,
    dtype: str = 'float32',
    weights: str = 'auto',
) -> Predictor:
    """A Predictor from a training run, a model directory or a torchvision state dict file
    (`variant`, `short_side`, `max_side` and the compute `dtype` apply to the last only;
    `weights` to runs only, see load_run). `RUN:best` is a run's best checkpoint
    (config.keep_best), `RUN` its newest."""
    where = model_path.resolve(model)
    path = where.path
    if where.is_run:
        return load_run(path, weights, best=where.best)
    if where.kind == 'model_dir':
        net, model_config = checkpoint.load_model(path)
    else:
        net = torchvision_weights.retinanet_from_torchvision(
            torchvision_weights.load_state_dict(path), variant, dtype=dtype
        )
        preset = ModelConfig.torchvision_v1 if variant == 'v1' else ModelConfig.torchvision_v2
        model_config = dataclasses.replace(preset(net.num_classes), dtype=dtype)
    anchors = anchor_lib.AnchorConfig.torchvision()
    side = anchor_lib.padded_size((max_side, max_side))[0]  # every resized image fits
    input_config = InputConfig(
        image_size=(side, side), short_side=short_side, max_side=max_side, flip=False
    )
    net.eval()
    mesh = sharding.make_mesh()
    graphdef, state = nnx.split(net)
    return Predictor(
        graphdef=graphdef,
        state=jax.device_put(state, sharding.replicated(mesh)),
        mesh=mesh,
        model_config=model_config,
        anchors=anchors,
        postprocess=postprocess.PostprocessConfig(max_detections=100),
        input=input_config,
        loss=LossConfig.torchvision_v2()
        if model_config.head_group_norm
        else LossConfig.torchvision(),
        description=path.name,
        classes=label_maps.for_num_classes(net.num_classes),
    )


def load_detector(model: str | Path, weights: str = 'auto') -> tuple[RetinaNet, tuple | None]:
    """(the model of `model` as an nnx module, its class names or None where unknown): a
    training run's (RUN or RUN:best; `weights` as load_run), a model directory's, or a
    torchvision retinanet_resnet50_fpn / _v2 state dict's (the variant read from its keys:
    GroupNorm in the heads is v2), with torchvision's COCO names where it has 91 classes."""
    where = model_path.resolve(model)
    if where.is_run:
        predictor = load_run(where.path, weights, best=where.best)
        try:
            names = predictor.label_map.names
        except (UserError, OSError):  # the run's data are not here: no names to match by
            names = None
        return predictor.model(), names
    if where.kind == 'model_dir':
        net, _ = checkpoint.load_model(where.path)
    else:
        state_dict = torchvision_weights.load_state_dict(where.path)
        v2 = 'head.classification_head.conv.0.1.weight' in state_dict
        net = torchvision_weights.retinanet_from_torchvision(state_dict, 'v2' if v2 else 'v1')
    # Names are known for torchvision's COCO models (91 labels, COCO's ids) only; any other
    # class count of a state dict or model directory says nothing of what its classes are.
    return net, label_maps.COCO91.names if net.num_classes == 91 else None


def torchvision_loss(model_config: ModelConfig) -> LossConfig:
    """The loss of a torchvision model (its validation loss): v2's where the heads have
    GroupNorm (retinanet_resnet50_fpn_v2), else v1's."""
    return LossConfig.torchvision_v2() if model_config.head_group_norm else LossConfig.torchvision()


WEIGHTS = ('auto', 'ema', 'raw')


def load_run(workdir: Path, weights: str = 'auto', best: bool = False) -> Predictor:
    """The Predictor of a training run's latest checkpoint (`best`: the one config.keep_best
    kept in DIR/best; its model alone is read): its EMA weights where the run keeps an EMA
    (config.ema) and `weights` is 'auto' or 'ema', else its raw weights ('raw', or 'auto'
    without an EMA)."""
    if weights not in WEIGHTS:
        raise UserError(f'weights must be one of {WEIGHTS}, got {weights!r}')
    workdir = Path(workdir).absolute()
    config_file = workdir / 'config.json'
    if not config_file.is_file():
        raise MissingFile(f'{workdir} is not a training run (no config.json)')
    try:
        run = settings_lib.from_config(json.loads(config_file.read_text()))
    except json.JSONDecodeError as e:
        raise UserError(f'{config_file}: not valid JSON ({e})') from None
    mesh = sharding.make_mesh()
    graphdef = eval_graphdef(run.model)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
        nnx.state(nnx.eval_shape(lambda: build_retinanet(run.model))),
    )
    if weights == 'ema' and not run.ema.enabled:
        raise UserError(f'weights=ema: {workdir} keeps no EMA of its weights (config.ema)')
    item = 'ema' if run.ema.enabled and weights != 'raw' else 'model'
    folder = 'best' if best else 'checkpoints'
    with checkpoint.run_checkpoints(workdir, folder=folder) as manager:
        restored, step = checkpoint.restore_run(manager, {item: abstract})
    if restored is None:
        raise MissingFile(f'{workdir}/{folder} holds no checkpoint')
    kind = ' (EMA weights)' if item == 'ema' else ''
    kind = f' (best by config.keep_best={run.keep_best!r})' + kind if best else kind
    description = f'checkpoint step {step} of {workdir}{kind}'
    return Predictor.of_run(run, graphdef, restored[item], mesh, description, step)
