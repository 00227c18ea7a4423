"""Deployment: the whole detector as one function of uint8 images, exported to StableHLO
(jax.export) and to ONNX (jax2onnx), to run without this package.

  detect = detector_function(predictor)        # the function both formats hold
  boxes, scores, labels, num_detections = detect(images)
  write_stablehlo(detect, image_hw, batch, path) / write_onnx(detect, image_hw, batch, path)
  load_stablehlo(path)  -> a callable (needs only jax)
  export_model(predictor, out, formats, image_hw, batch)   # a folder: the files + export.json
                                                            # + detect.py (`python -m ...export`)

The exported function:
  images          uint8 [B, H, W, 3] RGB, at the export's static size (H, W): resize (keeping
                  the aspect ratio) and pad bottom / right with PAD_VALUE, as the README shows
  -> boxes        float32 [B, D, 4] xyxy, pixels of the input, clipped to it
     scores       float32 [B, D]    sigmoid class probability, best first
     labels       int32 [B, D]      contiguous class (the manifest's names / category ids);
                                    -1 in empty slots
     num_detections int32 [B]       valid slots come first: slots >= num_detections are empty
with D = max_detections. Inside: normalisation, the network (eval mode), box decoding,
per-level top-k, class-aware NMS; the same code as predictor.make_predict_step. B is a
symbolic dimension (`batch=None`: any B >= 1) or fixed.

ONNX specifics: jax2onnx traces the JAX function; NMS (nms.nms_p) becomes ONNX's own
NonMaxSuppression plus TopK (the plugin below), so onnxruntime users get final detections.
Shared head weights are stored once (onnx_ir's initializer de-duplication). Models compute in
float32 in both formats (a bfloat16 model is exported with float32 arithmetic).
jax2onnx is installed apart: `pip install --no-deps -r requirements-nodeps.txt` (jax2onnx
0.17.1; its orbax pin is older than ours and it never imports orbax), with onnx, onnx-ir and
onnxruntime from requirements-dev.txt.
"""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax.errors import UserError
from retinanet_jax.models import build_retinanet
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops import nms, postprocess
from retinanet_jax.ops.normalization import PAD_VALUE, normalize_images

# The stand-alone runner copied into every export as detect.py (a command of its own: not imported).
DETECT_SCRIPT = Path(__file__).with_name('detect_template.py')
TILE_MERGE = Path(__file__).with_name('tile_merge.py')  # numpy only: the windows and the merge
OUTPUT_NAMES = ('boxes', 'scores', 'labels', 'num_detections')
INPUT_NAME = 'images'


def detector_function(predictor, image_hw: tuple[int, int] | None = None):
    """images uint8 [B, H, W, 3] -> (boxes, scores, labels, num_detections) of a Predictor
    (loading.load_predictor) at `image_hw` (default: the predictor's input size)."""
    image_hw = tuple(image_hw or predictor.image_hw)
    anchor_lib.check_image_size(image_hw)
    model_config = dataclasses.replace(predictor.model_config, dtype='float32')
    model = nnx.eval_shape(lambda: build_retinanet(model_config))
    model.eval()
    graphdef = nnx.graphdef(model)
    state = jax.device_get(predictor.state)
    anchors = np.asarray(anchor_lib.generate_anchors(image_hw, predictor.anchors))
    anchors_per_level = anchor_lib.anchors_per_level(image_hw, predictor.anchors)
    post = predictor.postprocess

    def detect(images):
        net = nnx.merge(graphdef, state)
        out = net(normalize_images(images))
        sizes = jnp.broadcast_to(jnp.asarray(image_hw, jnp.float32), (images.shape[0], 2))
        dets = postprocess.postprocess(
            out['cls_logits'],
            out['box_deltas'],
            jnp.asarray(anchors),
            sizes,
            anchors_per_level,
            post,
        )
        count = jnp.sum(dets['valid'].astype(jnp.int32), axis=1)
        return dets['boxes'], dets['scores'], dets['labels'], count

    return detect


def _input_spec(image_hw, batch: int | None):
    size = jax.export.symbolic_shape('b')[0] if batch is None else int(batch)
    return jax.ShapeDtypeStruct((size, *image_hw, 3), jnp.uint8)


def write_stablehlo(detect, image_hw, batch: int | None, path) -> None:
    """Serialises jax.export of `detect` (weights included) to `path`."""
    exported = jax.export.export(jax.jit(detect))(_input_spec(image_hw, batch))
    with open(path, 'wb') as f:
        f.write(exported.serialize())


def load_stablehlo(path):
    """The exported detector at `path` as a function of uint8 images (numpy in, numpy out);
    needs only jax (jax.export.deserialize), none of this package's model code."""
    with open(path, 'rb') as f:
        exported = jax.export.deserialize(bytearray(f.read()))

    def run(images):
        return tuple(np.asarray(x) for x in exported.call(jnp.asarray(images, jnp.uint8)))

    return run


def write_onnx(detect, image_hw, batch: int | None, path, opset: int = 21) -> None:
    """Converts `detect` with jax2onnx (NMS as ONNX NonMaxSuppression) and writes one .onnx file."""
    import onnx_ir as ir
    from onnx_ir.passes.common import DeduplicateHashedInitializersPass

    to_onnx = _jax2onnx()
    size = 'B' if batch is None else int(batch)
    proto = to_onnx(
        detect,
        inputs=[jax.ShapeDtypeStruct((size, *image_hw, 3), jnp.uint8)],
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        opset=opset,
        model_name='retinanet',
    )
    model = ir.from_proto(proto)  # (not return_mode='ir': its arrays are not contiguous)
    model = DeduplicateHashedInitializersPass()(model).model  # shared head weights: one copy
    ir.save(model, str(path))


def _jax2onnx():
    try:
        import jax2onnx
    except ImportError:
        raise UserError(
            'ONNX export needs jax2onnx: pip install onnx onnx-ir onnxruntime && '
            'pip install --no-deps -r requirements-nodeps.txt (jax2onnx==0.17.1)'
        ) from None
    # Its optional plugins for other libraries (equinox, dm-pix, ...) log a warning each when
    # those are missing; they are not needed here.
    logging.getLogger('jax2onnx').setLevel(logging.ERROR)
    _register_nms_plugin()
    return jax2onnx.to_onnx


_REGISTERED = []


def _register_nms_plugin() -> None:
    """Teaches jax2onnx nms.nms_p: ONNX NonMaxSuppression over per-class score planes,
    then ScatterND + TopK for the fixed-size, best-first [B, D] result of the JAX primitive."""
    if _REGISTERED:
        return
    import onnx_ir as ir
    from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
    from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin, register_primitive

    def const(ctx, value, hint):
        array = np.asarray(value)
        v = ctx.builder.Constant(value=ir.tensor(array), _outputs=[ctx.fresh_name(hint)])
        v.type = ir.TensorType(ir.tensor(array).dtype)
        _stamp_type_and_shape(v, array.shape)
        return v

    @register_primitive(
        jaxpr_primitive=nms.nms_p.name,
        onnx=[{'component': 'NonMaxSuppression'}],
        since='retinanet-jax',
        context='primitives.retinanet',
        component='retinanet_nms',
    )
    class NmsPlugin(PrimitiveLeafPlugin):
        def lower(self, ctx, eqn):
            b = ctx.builder
            boxes_var, scores_var, labels_var = eqn.invars
            index_var, kept_var = eqn.outvars
            d, c = int(eqn.params['max_output']), eqn.params['num_classes']
            if len(scores_var.aval.shape) != 2:
                raise NotImplementedError('retinanet_nms in ONNX: scores must be [B, N]')
            n = int(scores_var.aval.shape[-1])
            boxes = ctx.get_value_for_var(boxes_var, name_hint=ctx.fresh_name('nms_boxes'))
            scores = ctx.get_value_for_var(scores_var, name_hint=ctx.fresh_name('nms_scores'))
            labels = ctx.get_value_for_var(labels_var, name_hint=ctx.fresh_name('nms_labels'))
            neg_inf = const(ctx, np.float32(-np.inf), 'nms_neg_inf')
            axis1 = const(ctx, np.array([1], np.int64), 'nms_axis1')
            classes = const(ctx, np.arange(c, dtype=np.int32).reshape(1, c, 1), 'nms_classes')
            # Per-class score planes [B, C, N]: the score where the label is c, else -inf.
            planes = b.Where(
                b.Equal(b.Unsqueeze(labels, axis1), classes), b.Unsqueeze(scores, axis1), neg_inf
            )
            selected = b.NonMaxSuppression(  # [S, 3] (batch, class, box), per class
                boxes,
                planes,
                const(ctx, np.array([d], np.int64), 'nms_max_per_class'),
                const(ctx, np.array([eqn.params['iou_threshold']], np.float32), 'nms_iou'),
                # ORT keeps scores strictly above this: every finite one, never -inf
                const(ctx, np.array([np.finfo(np.float32).min], np.float32), 'nms_min_score'),
                center_point_box=0,
            )
            where = b.Gather(selected, const(ctx, np.array([0, 2], np.int64), 'nms_bn'), axis=1)
            dense = b.ScatterND(
                b.Expand(neg_inf, b.Shape(scores)), where, b.GatherND(scores, where)
            )
            if n < d:  # TopK needs k <= N
                pads = const(ctx, np.array([0, 0, 0, d - n], np.int64), 'nms_pads')
                dense = b.Pad(dense, pads, neg_inf)
            values, index = b.TopK(
                dense,
                const(ctx, np.array([d], np.int64), 'nms_k'),
                axis=1,
                largest=1,
                sorted=1,
                _outputs=2,
            )
            kept = b.Not(b.IsInf(values, detect_negative=1, detect_positive=0))
            index = b.Where(
                kept, b.Cast(index, to=int(ir.DataType.INT32)), const(ctx, np.int32(0), 'nms_zero')
            )
            shape = tuple(index_var.aval.shape)
            for value, dtype in ((index, ir.DataType.INT32), (kept, ir.DataType.BOOL)):
                value.type = ir.TensorType(dtype)
                _stamp_type_and_shape(value, shape)
                _ensure_value_metadata(ctx, value)
            ctx.bind_value_for_var(index_var, index)
            ctx.bind_value_for_var(kept_var, kept)

    _REGISTERED.append(NmsPlugin)


# ------------------------------------------------------------------------------ the export

FORMATS = {'stablehlo': 'detector.stablehlo', 'onnx': 'detector.onnx'}


def manifest(predictor, formats, image_hw, batch) -> dict:
    """export.json: what a user of the files needs to know, and what makes two exports equal."""
    labels = predictor.label_map
    return {
        'model': predictor.description,
        'formats': list(formats),
        'files': {f: FORMATS[f] for f in formats},
        'image_size': list(image_hw),
        'batch': 'dynamic' if batch is None else batch,
        'inputs': {INPUT_NAME: f'uint8 [B, {image_hw[0]}, {image_hw[1]}, 3] RGB'},
        'outputs': {
            'boxes': 'float32 [B, D, 4] xyxy input pixels',
            'scores': 'float32 [B, D] best first',
            'labels': 'int32 [B, D] index into names; -1 empty',
            'num_detections': 'int32 [B] valid slots come first',
        },
        'pad_value': list(PAD_VALUE),
        'names': list(labels.names),
        'category_ids': [int(c) for c in labels.category_ids],
        'postprocess': dataclasses.asdict(predictor.postprocess),
        'model_config': dataclasses.asdict(predictor.model_config),
    }


def export_model(
    predictor,
    out: str | Path,
    formats=('stablehlo', 'onnx'),
    image_hw=None,
    batch: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the export folder `out`: the detector in each of `formats` (FORMATS), export.json
    (manifest), detect.py; returns it. An `out` that holds another export is refused unless
    `overwrite`; `batch` None: a symbolic batch dimension."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserError(f'formats: unknown {unknown or formats}; known: {", ".join(FORMATS)}')
    image_hw = tuple(image_hw or predictor.image_hw)
    anchor_lib.check_image_size(image_hw)
    if batch is not None and batch < 1:
        raise UserError(f'batch must be >= 1 or dynamic, got {batch}')
    out = Path(out)
    spec = manifest(predictor, formats, image_hw, batch)
    existing = out / 'export.json'
    if existing.is_file() and not overwrite:
        if json.loads(existing.read_text()) != json.loads(json.dumps(spec)):
            raise UserError(
                f'out {out} holds another export ({existing}); pass overwrite=True '
                '(--overwrite) to replace it or choose another folder'
            )
    elif out.exists() and any(out.iterdir()) and not existing.is_file() and not overwrite:
        raise UserError(f'out {out} is not empty and holds no export; choose another folder')
    out.mkdir(parents=True, exist_ok=True)
    detect = detector_function(predictor, image_hw)
    for fmt in formats:
        writer = write_stablehlo if fmt == 'stablehlo' else write_onnx
        writer(detect, image_hw, batch, out / FORMATS[fmt])
    shutil.copyfile(DETECT_SCRIPT, out / 'detect.py')
    shutil.copyfile(TILE_MERGE, out / 'tile_merge.py')  # detect.py --tile_size
    existing.write_text(json.dumps(spec, indent=1))
    return out
