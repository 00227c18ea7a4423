"""A model ready to predict: its state on the mesh and its jitted predict step (loading.py
makes one from a model path).

  dets = predictor.predict_image(image)    # uint8 [H, W, 3] RGB -> detections (numpy)
  dets = predictor.predict_images(images)  # a list of such images, a batch per device count
  step = make_predict_step(graphdef, image_hw, anchor_config, postprocess_config, mesh)
  graphdef = eval_graphdef(model_config)   # the model in eval mode (running statistics)
(evaluation/split_evaluation.py runs a predict step over a dataset split, with its loss.)

Detections: 'boxes' float32 [D, 4] xyxy in original image pixels, 'scores' [D], 'labels' int32
[D] contiguous (the predictor's label_map turns them into names and category ids), 'valid'
bool [D] (False: an empty slot), D = postprocess max_detections, best first.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax import compiler_options, sharding
from retinanet_jax import settings as settings_lib
from retinanet_jax.data import pipeline
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.data.label_maps import LabelMap
from retinanet_jax.errors import UserError
from retinanet_jax.models import ModelConfig, RetinaNet, build_retinanet
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops import losses, postprocess
from retinanet_jax.ops.normalization import normalize_images


@functools.lru_cache(maxsize=8)
def eval_graphdef(model_config: ModelConfig) -> nnx.GraphDef:
    """The graphdef of the model in eval mode (running batch-norm statistics), from shapes."""
    model = nnx.eval_shape(lambda: build_retinanet(model_config))
    model.eval()
    return nnx.graphdef(model)


def call_size(batch_size: int) -> int:
    """This process's examples per jitted call for a requested `batch_size`: rounded up to a
    multiple of its devices (0: one per device). With several processes, each stacks its own
    rows of the call (the global batch is theirs together), so a device holds batch_size /
    local devices, as with one process."""
    devices = jax.local_device_count()
    return max(devices, -(-batch_size // devices) * devices)


@functools.lru_cache(maxsize=8)  # the same arguments again in one process: the same step
def make_predict_step(
    graphdef: nnx.GraphDef,
    image_hw: tuple[int, int],
    anchor_config: anchor_lib.AnchorConfig,
    postprocess_config: postprocess.PostprocessConfig,
    mesh,
    loss_config: losses.LossConfig | None = None,
):
    """step(model_state, batch) -> detections in original image pixels (see postprocess.py),
    batch split over the mesh's 'data' axis.

    `graphdef`: the model's, in eval mode (`eval_graphdef`); model_state its nnx state.
    batch: 'image' uint8 [B, H, W, 3], 'content_size' int32 [B, 2], 'scale' float32 [B, 2];
    with `loss_config` also 'gt_boxes' [B, M, 4] / 'gt_labels' [B, M] (as training batches),
    and the detections carry 'loss_terms' float32 [B, 3]: each image's unnormalised class and
    box loss and positive count (losses.per_image_loss_terms), for a validation loss.

    The score threshold is an argument of the compiled program (`step.program`), not part of
    it: steps that differ only in postprocess_config.score_threshold share one program."""
    any_score = dataclasses.replace(postprocess_config, score_threshold=0.0)
    program = _predict_program(graphdef, image_hw, anchor_config, any_score, mesh, loss_config)
    threshold = np.float32(postprocess.score_logit(postprocess_config.score_threshold))

    def step(state, batch):
        return program(state, batch, threshold)

    step.program, step.threshold = program, threshold  # program(state, batch, threshold)
    return step


@functools.lru_cache(maxsize=8)
def _predict_program(graphdef, image_hw, anchor_config, postprocess_config, mesh, loss_config):
    """jit(model_state, batch, logit_threshold) of make_predict_step."""
    anchors_per_level = anchor_lib.anchors_per_level(image_hw, anchor_config)
    anchors = jnp.asarray(anchor_lib.generate_anchors(image_hw, anchor_config))

    def predict(state, batch, logit_threshold):
        model = nnx.merge(graphdef, state)
        out = model(normalize_images(batch['image']))
        dets = postprocess.postprocess(
            out['cls_logits'],
            out['box_deltas'],
            anchors,
            batch['content_size'],
            anchors_per_level,
            postprocess_config,
            logit_threshold,
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
        in_shardings=(rep, split, rep),
        out_shardings=split,
        compiler_options=compiler_options.default(),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Predictor:
    """A model ready to predict: its state on the mesh, its jitted predict step, and what the
    step needs to know about its input and output. Immutable: another post-processing (say)
    is another Predictor, `dataclasses.replace(predictor, postprocess=...)`, whose predict
    step is its own (another score threshold alone: the same compiled program)."""

    graphdef: nnx.GraphDef  # the model's, in eval mode
    state: nnx.State  # replicated on `mesh`
    mesh: jax.sharding.Mesh
    model_config: ModelConfig
    anchors: anchor_lib.AnchorConfig
    postprocess: postprocess.PostprocessConfig
    input: InputConfig
    loss: losses.LossConfig  # what its validation loss is (a run's; torchvision's for others)
    description: str  # e.g. 'checkpoint step 700 of /runs/x' or 'retinanet.pth'
    step: int | None = None  # a training run's checkpoint step
    settings: settings_lib.Settings | None = None  # a training run's settings
    classes: LabelMap | None = None  # torchvision models: by class count (else the run's)

    @classmethod
    def of_run(cls, settings, graphdef, state, mesh, description: str, step=None) -> 'Predictor':
        """The Predictor of a training run's model weights `state` (nnx state of `graphdef`'s
        model, on `mesh`), with the run's settings (settings.Settings) for the rest."""
        return cls(
            graphdef=graphdef,
            state=state,
            mesh=mesh,
            model_config=settings.model,
            anchors=settings.anchors,
            postprocess=settings.postprocess,
            input=settings.input,
            loss=settings.loss,
            description=description,
            step=step,
            settings=settings,
        )

    @functools.cached_property
    def predict(self):
        """step(state, batch) -> detections (make_predict_step)."""
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
            raise UserError(f'{self.description} is not a training run: it has no dataset')
        return settings_lib.make_sources(self.settings)

    @property
    def label_map(self):
        """The classes the model predicts (data.label_maps.LabelMap)."""
        return self.classes if self.classes is not None else self.sources[0].label_map

    def model(self) -> RetinaNet:
        """The model (eval mode) as an nnx module."""
        return nnx.merge(self.graphdef, self.state)

    def predict_images(self, images: list[np.ndarray], batch_size: int = 0) -> list[dict]:
        """Detections of each uint8 [H, W, 3] RGB image (see the module docstring), in batches
        of `batch_size` (0: one image per device)."""
        examples = (pipeline.preprocess_image(im, self.input) for im in images)
        return list(self.predict_examples(examples, batch_size))

    def predict_examples(self, examples, batch_size: int = 0):
        """Detections of each preprocessed example (pipeline.preprocess_image) of the iterable
        `examples`, yielded in order: fixed-size batches of `batch_size` (rounded up to a
        multiple of this process's device count, call_size; 0: one per device) through the one
        jitted predict step, the last padded. Only one batch is held at a time."""
        per_call = call_size(batch_size)
        chunk = []
        for example in examples:
            chunk.append(example)
            if len(chunk) == per_call:
                yield from self._predict_chunk(chunk, per_call)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk, per_call)

    def _predict_chunk(self, chunk: list[dict], per_call: int) -> list[dict]:
        batch = {k: np.stack([e[k] for e in chunk]) for k in chunk[0]}
        filler = per_call - len(chunk)  # padded with copies of the last: a static batch
        batch = {k: np.concatenate([v, np.repeat(v[-1:], filler, 0)]) for k, v in batch.items()}
        dets = sharding.to_local(
            self.predict(self.state, sharding.to_global(batch, self.mesh)), self.mesh
        )
        return [{k: v[i] for k, v in dets.items()} for i in range(len(chunk))]

    def predict_image(self, image: np.ndarray) -> dict:
        return self.predict_images([image])[0]
