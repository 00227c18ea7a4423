"""Inference: a trained model, ready to predict and evaluate, from any of the places a model
lives. The predict, evaluate and export commands are thin users of it.

  predictor = load_predictor(path)         # a training run, a model directory or a .pth file
  dets = predictor.predict_image(image)    # uint8 [H, W, 3] RGB -> detections (numpy)
  step = make_predict_step(graphdef, image_hw, anchor_config, postprocess_config, mesh)
  predict_files(predictor, paths, out)    # image files -> detections.json + drawn pictures
(evaluation.evaluate_model runs a predict step over a dataset split.)

Detections: 'boxes' float32 [D, 4] xyxy in original image pixels, 'scores' [D], 'labels' int32
[D] contiguous (the predictor's label_map turns them into names and category ids), 'valid'
bool [D] (False: an empty slot), D = postprocess max_detections, best first.

`path` is one of:
  a training run directory   (config.json + checkpoints/): its latest checkpoint's model, its
                              input size, anchors, post-processing and classes
  a model directory          (model_config.json + state/, from the convert command)
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
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax import checkpoint, compiler_options, sharding, visualize
from retinanet_jax import settings as settings_lib
from retinanet_jax.data import images, label_maps, pipeline
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.data.label_maps import LabelMap
from retinanet_jax.models import ModelConfig, RetinaNet, build_retinanet, torchvision_weights
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops import losses, postprocess
from retinanet_jax.ops.normalization import normalize_images


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
    loss_config: losses.LossConfig | None = None,
):
    """jit(model_state, batch) -> detections in original image pixels (see postprocess.py),
    batch split over the mesh's 'data' axis.

    `graphdef`: the model's, in eval mode (`eval_graphdef`); model_state its nnx state.
    batch: 'image' uint8 [B, H, W, 3], 'content_size' int32 [B, 2], 'scale' float32 [B, 2];
    with `loss_config` also 'gt_boxes' [B, M, 4] / 'gt_labels' [B, M] (as training batches),
    and the detections carry 'loss_terms' float32 [B, 3]: each image's unnormalised class and
    box loss and positive count (losses.per_image_loss_terms), for a validation loss."""
    anchors_per_level = anchor_lib.anchors_per_level(image_hw, anchor_config)
    anchors = jnp.asarray(anchor_lib.generate_anchors(image_hw, anchor_config))

    def predict(state, batch):
        model = nnx.merge(graphdef, state)
        out = model(normalize_images(batch['image']))
        dets = postprocess.postprocess(
            out['cls_logits'],
            out['box_deltas'],
            anchors,
            batch['content_size'],
            anchors_per_level,
            postprocess_config,
        )
        dets['boxes'] = postprocess.boxes_to_original(dets['boxes'], batch['scale'])
        if loss_config is not None:
            terms = jax.vmap(
                lambda c, b, g, lab: losses.per_image_loss_terms(c, b, anchors, g, lab, loss_config)
            )(out['cls_logits'], out['box_deltas'], batch['gt_boxes'], batch['gt_labels'])
            dets['loss_terms'] = jnp.stack(terms, axis=-1)
        return dets

    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(
        predict,
        in_shardings=(rep, split),
        out_shardings=split,
        compiler_options=compiler_options.default(),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Predictor:
    """A model ready to predict: its state on the mesh, its jitted predict step, and what the
    step needs to know about its input and output. Immutable: another post-processing (say)
    is another Predictor, `dataclasses.replace(predictor, postprocess=...)`, whose predict
    step is its own."""

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
    classes: LabelMap | None = None  # torchvision models: by class count (else the run's)

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
        return self.classes if self.classes is not None else self.sources[0].label_map

    def model(self) -> RetinaNet:
        """The model (eval mode) as an nnx module."""
        return nnx.merge(self.graphdef, self.state)

    def predict_images(self, images: list[np.ndarray]) -> list[dict]:
        """Detections of each uint8 [H, W, 3] RGB image (see the module docstring)."""
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
    path = Path(model)
    best = str(model).endswith(':best') and not path.exists()
    if best:
        path = Path(str(model)[: -len(':best')])
    if path.is_dir() and (path / 'config.json').is_file():
        return load_run(path, weights, best=best)
    if best:
        raise FileNotFoundError(f'--model {model}: {path} is not a training run (no config.json)')
    if path.is_dir() and (path / 'model_config.json').is_file():
        net, model_config = checkpoint.load_model(path)
    elif path.is_file():
        net = torchvision_weights.retinanet_from_torchvision(
            torchvision_weights.load_state_dict(path), variant, dtype=dtype
        )
        preset = ModelConfig.torchvision_v1 if variant == 'v1' else ModelConfig.torchvision_v2
        model_config = dataclasses.replace(preset(net.num_classes), dtype=dtype)
    elif path.exists():
        raise ValueError(
            f'--model {path}: neither a training run (config.json), a model directory '
            '(model_config.json) nor a state dict file'
        )
    else:
        raise FileNotFoundError(f'--model {path}: no such file or directory')
    anchors = anchor_lib.AnchorConfig.torchvision()
    side = anchor_lib.padded_size((max_side, max_side), anchors)[0]  # every resized image fits
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
        description=path.name,
        classes=label_maps.for_num_classes(net.num_classes),
    )


WEIGHTS = ('auto', 'ema', 'raw')


def load_run(workdir: Path, weights: str = 'auto', best: bool = False) -> Predictor:
    """The Predictor of a training run's latest checkpoint (`best`: the one config.keep_best
    kept in DIR/best; its model alone is read): its EMA weights where the run keeps an EMA
    (config.ema) and `weights` is 'auto' or 'ema', else its raw weights ('raw', or 'auto'
    without an EMA)."""
    if weights not in WEIGHTS:
        raise ValueError(f'--weights must be one of {WEIGHTS}, got {weights!r}')
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
    if weights == 'ema' and not run.ema.enabled:
        raise ValueError(f'--weights=ema: {workdir} keeps no EMA of its weights (config.ema)')
    item = 'ema' if run.ema.enabled and weights != 'raw' else 'model'
    folder = 'best' if best else 'checkpoints'
    with checkpoint.run_checkpoints(workdir, folder=folder) as manager:
        restored, step = checkpoint.restore_run(manager, {item: abstract})
    if restored is None:
        raise FileNotFoundError(f'{workdir}/{folder} holds no checkpoint')
    kind = ' (EMA weights)' if item == 'ema' else ''
    kind = f' (best by config.keep_best={run.keep_best!r})' + kind if best else kind
    return Predictor(
        graphdef=graphdef,
        state=restored[item],
        mesh=mesh,
        model_config=run.model,
        anchors=run.anchors,
        postprocess=run.postprocess,
        input=run.input,
        description=f'checkpoint step {step} of {workdir}{kind}',
        step=step,
        settings=run,
    )


IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def image_files(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f'no such image file or folder: {p}')
    if not files:
        raise ValueError(f'no image files found in {paths}')
    return files


def predict_files(
    predictor: Predictor,
    paths: list[str],
    out: Path,
    min_score: float = 0.3,
    exif: str = 'apply',
) -> list[dict]:
    """Detections of every image file under `paths` (see the module docstring); `exif`: see
    data/images.py ('apply': boxes refer to the upright picture a viewer shows)."""
    p = predictor
    names, category_ids = p.label_map.names, p.label_map.category_ids
    files = image_files(paths)
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for path in files:
        try:
            image = images.read_image(path, exif)
        except ValueError as e:
            logging.warning('skipping %s', e)
            skipped.append(str(path))
            continue
        dets = p.predict_image(image)
        keep = dets['valid']
        boxes, scores, labels = dets['boxes'][keep], dets['scores'][keep], dets['labels'][keep]
        shown = scores >= min_score
        picture = visualize.draw_boxes(image, boxes[shown], labels[shown], names, scores[shown])
        picture.save(out / f'{path.stem}.png')
        for box, score, label in zip(boxes, scores, labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    'file_name': path.name,
                    'category_id': int(category_ids[label]),
                    'bbox': [x1, y1, x2 - x1, y2 - y1],
                    'score': float(score),
                }
            )
    (out / 'detections.json').write_text(json.dumps(results, indent=1))
    note = f'; skipped {len(skipped)} unreadable: {skipped}' if skipped else ''
    print(
        f'{p.description}: {len(results)} detections in {len(files) - len(skipped)} '
        f'image(s) -> {out}{note}'
    )
    return results
