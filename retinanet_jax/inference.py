"""Inference: a trained model, ready to predict and evaluate, from any of the places a model
lives. The predict, evaluate and export commands are thin users of this module.

  predictor = load_predictor(path)         # a training run, a model directory or a .pth file
  dets = predictor.predict_image(image)    # uint8 [H, W, 3] RGB -> detections (numpy)
  step = make_predict_step(graphdef, image_hw, anchor_config, postprocess_config, mesh)
  metrics = evaluate(step, model_state, batches, num_batches, evaluator, mesh)

Detections: 'boxes' float32 [D, 4] xyxy in original image pixels, 'scores' [D], 'labels' int32
[D] contiguous (the predictor's label_map turns them into names and category ids), 'valid'
bool [D] (False: an empty slot), D = postprocess max_detections, best first.

`path` is one of:
  a training run directory   (config.json + checkpoints/): its latest checkpoint's model, its
                              input size, anchors, post-processing and classes
  a model directory          (model_config.json + state/, from `python -m retinanet_jax.convert`)
  a torchvision state dict   (retinanet_resnet50_fpn(_v2) .pth / .safetensors / .npz, `variant`)
The last two are torchvision models: torchvision's anchors and resizing (short side
`short_side`, long side at most `max_side`, on a static canvas of max_side rounded up to 128),
class names by class count (91: torchvision's COCO labels, i.e. COCO category ids) and 100
detections per image (torchvision keeps 300; COCO's AP counts the best 100 of each image).
Models with trainable batch norm predict in eval mode (running statistics).
"""

import dataclasses
import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax import anchors as anchor_lib
from retinanet_jax import checkpoint, compiler_options, postprocess, sharding
from retinanet_jax import settings as settings_lib
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.models import ModelConfig, RetinaNet, build_retinanet
from retinanet_jax.normalization import normalize_images


def eval_graphdef(model_config: ModelConfig) -> nnx.GraphDef:
    """The graphdef of the model in eval mode (running batch-norm statistics), from shapes."""
    model = nnx.eval_shape(lambda: build_retinanet(model_config))
    model.eval()
    return nnx.graphdef(model)


def make_predict_step(
    graphdef: nnx.GraphDef,
    image_hw: tuple[int, int],
    anchor_config: anchor_lib.AnchorConfig,
    postprocess_config: postprocess.PostprocessConfig,
    mesh,
):
    """jit(model_state, batch) -> detections in original image pixels (see postprocess.py),
    batch split over the mesh's 'data' axis.

    `graphdef`: the model's, in eval mode (`eval_graphdef`); model_state its nnx state.
    batch: 'image' uint8 [B, H, W, 3], 'image_size' int32 [B, 2], 'scale' float32 [B, 2]."""
    level_sizes = anchor_lib.level_sizes(image_hw, anchor_config)
    anchors = jnp.asarray(anchor_lib.generate_anchors(image_hw, anchor_config))

    def predict(state, batch):
        model = nnx.merge(graphdef, state)
        out = model(normalize_images(batch['image']))
        dets = postprocess.postprocess(
            out['cls_logits'],
            out['box_deltas'],
            anchors,
            batch['image_size'],
            level_sizes,
            postprocess_config,
        )
        dets['boxes'] = postprocess.boxes_to_original(dets['boxes'], batch['scale'])
        return dets

    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(
        predict,
        in_shardings=(rep, split),
        out_shardings=split,
        compiler_options=compiler_options.default(),
    )


def evaluate(predict, state, batches, num_batches: int, evaluator, mesh, progress=None) -> dict:
    """Runs `predict` (make_predict_step) with the model `state` over evaluation batches (an
    iterable of numpy batches, e.g. pipeline.eval_batches) and returns the evaluator's metrics.
    `progress`: an optional progress-bar class (tqdm); a batch counts once its detections are
    on the host, so the bar's rate and ETA come from finished work."""
    evaluator.reset()
    pending = None  # the previous batch, whose detections are still being computed

    def finish(item):
        dets, batch = item
        evaluator.add_batch(sharding.to_local(dets, mesh), batch)

    bar = progress(total=num_batches, desc='eval', leave=False) if progress else None
    for batch in batches:
        dets = predict(state, sharding.to_global(batch, mesh))  # dispatched, not waited for
        if pending is not None:
            finish(pending)
            if bar is not None:
                bar.update(1)
        pending = (dets, batch)
    if pending is not None:
        finish(pending)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return evaluator.evaluate()


@dataclasses.dataclass
class Predictor:
    """A model ready to predict: its state on the mesh, its jitted predict step, and what the
    step needs to know about its input and output."""

    graphdef: nnx.GraphDef  # the model's, in eval mode
    state: nnx.State  # replicated on `mesh`
    mesh: jax.sharding.Mesh
    model_config: ModelConfig
    anchors: anchor_lib.AnchorConfig
    postprocess: postprocess.PostprocessConfig
    input: InputConfig
    description: str  # e.g. 'checkpoint step 700 of /runs/x' or 'retinanet.pth'
    step: int | None = None  # a training run's checkpoint step
    settings: settings_lib.Settings | None = None  # a training run's settings
    _label_map: object = None  # torchvision models: by class count

    @functools.cached_property
    def predict(self):
        """jit(state, batch) -> detections (make_predict_step)."""
        return make_predict_step(
            self.graphdef, self.image_hw, self.anchors, self.postprocess, self.mesh
        )

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.input.image_size)

    @functools.cached_property
    def sources(self):
        """A training run's (training source, evaluation source) (settings.make_sources)."""
        if self.settings is None:
            raise ValueError(f'{self.description} is not a training run: it has no dataset')
        return settings_lib.make_sources(self.settings)

    @property
    def label_map(self):
        """The classes the model predicts (data.label_maps.LabelMap)."""
        return self._label_map if self._label_map is not None else self.sources[0].label_map

    def model(self) -> RetinaNet:
        """The model (eval mode) as an nnx module."""
        return nnx.merge(self.graphdef, self.state)

    def predict_images(self, images: list[np.ndarray]) -> list[dict]:
        """Detections of each uint8 [H, W, 3] RGB image (see the module docstring)."""
        from retinanet_jax.data import pipeline

        examples = [pipeline.preprocess_image(im, self.input) for im in images]
        out = []
        per_call = jax.device_count()
        for start in range(0, len(examples), per_call):
            chunk = examples[start : start + per_call]
            batch = {k: np.stack([e[k] for e in chunk]) for k in chunk[0]}
            filler = per_call - len(chunk)  # pad to a multiple of the device count
            batch = {k: np.concatenate([v, np.repeat(v[-1:], filler, 0)]) for k, v in batch.items()}
            dets = sharding.to_local(
                self.predict(self.state, sharding.to_global(batch, self.mesh)), self.mesh
            )
            out += [{k: v[i] for k, v in dets.items()} for i in range(len(chunk))]
        return out

    def predict_image(self, image: np.ndarray) -> dict:
        return self.predict_images([image])[0]


def load_predictor(
    model: str | Path, variant: str = 'v1', short_side: int = 800, max_side: int = 1333
) -> Predictor:
    """A Predictor from a training run, a model directory or a torchvision state dict file."""
    from retinanet_jax import convert
    from retinanet_jax.data import label_maps

    path = Path(model)
    if path.is_dir() and (path / 'config.json').is_file():
        return load_run(path)
    if path.is_dir() and (path / 'model_config.json').is_file():
        net, model_config = checkpoint.load_model(path)
    elif path.is_file():
        net = convert.retinanet_from_torchvision(convert.load_state_dict(path), variant)
        preset = ModelConfig.torchvision_v1 if variant == 'v1' else ModelConfig.torchvision_v2
        model_config = preset(net.num_classes)
    elif path.exists():
        raise ValueError(
            f'--model {path}: neither a training run (config.json), a model directory '
            '(model_config.json) nor a state dict file'
        )
    else:
        raise FileNotFoundError(f'--model {path}: no such file or directory')
    side = 128 * math.ceil(max_side / 128)  # a static canvas every resized image fits in
    input_config = InputConfig(
        image_size=(side, side), short_side=short_side, max_side=max_side, flip=False
    )
    net.eval()
    mesh = sharding.make_mesh()
    graphdef, state = nnx.split(net)
    return Predictor(
        graphdef,
        jax.device_put(state, sharding.replicated(mesh)),
        mesh,
        model_config,
        anchor_lib.AnchorConfig.torchvision(),
        postprocess.PostprocessConfig(max_detections=100),
        input_config,
        path.name,
        _label_map=label_maps.for_num_classes(net.num_classes),
    )


def load_run(workdir: Path) -> Predictor:
    """The Predictor of a training run's latest checkpoint (its model alone is read)."""
    workdir = Path(workdir).absolute()
    config_file = workdir / 'config.json'
    if not config_file.is_file():
        raise FileNotFoundError(f'{workdir} is not a training run (no config.json)')
    try:
        run = settings_lib.from_config(json.loads(config_file.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f'{config_file}: not valid JSON ({e})') from None
    mesh = sharding.make_mesh()
    graphdef = eval_graphdef(run.model)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
        nnx.state(nnx.eval_shape(lambda: build_retinanet(run.model))),
    )
    with checkpoint.run_checkpoints(workdir) as manager:
        restored, step = checkpoint.restore_run(manager, {'model': abstract})
    if restored is None:
        raise FileNotFoundError(f'{workdir}/checkpoints holds no checkpoint')
    return Predictor(
        graphdef,
        restored['model'],
        mesh,
        run.model,
        run.anchors,
        run.postprocess,
        run.input,
        f'checkpoint step {step} of {workdir}',
        step,
        run,
    )
