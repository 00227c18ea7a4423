"""Export a trained detector (pre-processing, network, decoding, NMS) to run outside JAX.

  python -m retinanet_jax export --model=RUN_OR_MODEL --out=DIR [--format=stablehlo,onnx] \
      [--image_size=H,W] [--batch=N|dynamic] [--overwrite]

--model is a training run (RUN or RUN:best), a model directory or a torchvision state dict
(inference/model_path.py). Writes to DIR:
  detector.stablehlo   jax.export, serialised (weights included); load with
                       jax.export.deserialize, no retinanet_jax needed
  detector.onnx        ONNX (opset 21), NMS as ONNX NonMaxSuppression; runs in onnxruntime
  export.json          the contract: input and output names, shapes and dtypes, the image size,
                       pad value, class names and category ids, post-processing settings
  detect.py            a stand-alone runner: `python DIR/detect.py photo.jpg`, large images
                       by windows with --tile_size 512 [--tile_overlap 0.2]
  tile_merge.py        the windows and their merge, numpy only (detect.py --tile_size)
Inputs and outputs are described in inference/export.py. --image_size defaults to the model's
input size and must be a multiple of 32 on each side (the deepest stride); --batch=dynamic
(default) exports a symbolic batch dimension; --score_threshold and --max_detections override
the model's post-processing. An --out folder that holds another export is refused unless
--overwrite.
"""

import dataclasses

from absl import flags

from retinanet_jax.commands import command
from retinanet_jax.errors import UserError
from retinanet_jax.inference import export
from retinanet_jax.inference.loading import load_predictor


def define_flags(fv: flags.FlagValues) -> None:
    command.define_model_flags(fv)
    command.define_cache_flag(fv)
    flags.DEFINE_string('out', None, 'folder to write the export to', flag_values=fv)
    flags.DEFINE_list(
        'format', ['stablehlo', 'onnx'], f'any of {", ".join(export.FORMATS)}', flag_values=fv
    )
    flags.DEFINE_list(
        'image_size', None, "H,W of the exported input (default: the model's)", flag_values=fv
    )
    flags.DEFINE_string('batch', 'dynamic', 'a batch size, or "dynamic" (any)', flag_values=fv)
    flags.DEFINE_bool('overwrite', False, 'replace an export already in --out', flag_values=fv)
    flags.DEFINE_float(
        'score_threshold',
        None,
        "keep detections above this (default: the model's)",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        'max_detections', None, "detections per image (default: the model's)", flag_values=fv
    )
    flags.mark_flags_as_required(['model', 'out'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    image_hw = tuple(_int('--image_size', v, 'H,W') for v in f.image_size) if f.image_size else None
    batch = None if f.batch == 'dynamic' else _int('--batch', f.batch, 'an integer or "dynamic"')
    predictor = load_predictor(f.model, **command.model_options(f))
    overrides = {
        k: getattr(f, k) for k in ('score_threshold', 'max_detections') if getattr(f, k) is not None
    }
    postprocess = dataclasses.replace(predictor.postprocess, **overrides)
    predictor = dataclasses.replace(predictor, postprocess=postprocess)
    out = export.export_model(predictor, f.out, tuple(f.format), image_hw, batch, f.overwrite)
    print(
        f'{predictor.description}: exported {", ".join(f.format)} '
        f'({"x".join(map(str, image_hw or predictor.image_hw))}, batch {f.batch}) to {out}; '
        f'try: python {out / "detect.py"} IMAGE'
    )


def _int(name: str, value: str, form: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f'{name} must be {form}, got {value!r}') from None
