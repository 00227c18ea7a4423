"""Export a trained detector (pre-processing, network, decoding, NMS) to run outside JAX.

  python -m retinanet_jax.export --model=RUN_OR_MODEL --out=DIR [--format=stablehlo,onnx]
      [--image_size=H,W] [--batch=N|dynamic] [--overwrite]

--model is a training run, a model directory or a torchvision state dict (see inference.py).
Writes to DIR:
  detector.stablehlo   jax.export, serialised (weights included); load with
                       jax.export.deserialize, no retinanet_jax needed
  detector.onnx        ONNX (opset 21), NMS as ONNX NonMaxSuppression; runs in onnxruntime
  export.json          the contract: input and output names, shapes and dtypes, the image size,
                       pad value, class names and category ids, post-processing settings
  detect.py            a stand-alone runner: `python DIR/detect.py photo.jpg`
Inputs and outputs are described in deploy.py. --image_size defaults to the model's input size
and must be a multiple of 128 on each side (the largest stride); --batch=dynamic (default)
exports a symbolic batch dimension; --score_threshold and --max_detections override the model's
post-processing. An --out folder that holds another export is refused unless --overwrite.
"""

import dataclasses
import json
import shutil
from pathlib import Path

from absl import app, flags

from retinanet_jax import anchors, cli, deploy, exported_detect
from retinanet_jax.inference import Predictor, load_predictor
from retinanet_jax.normalization import PAD_VALUE

FORMATS = {'stablehlo': 'detector.stablehlo', 'onnx': 'detector.onnx'}


def manifest(predictor: Predictor, formats, image_hw, batch) -> dict:
    """export.json: what a user of the files needs to know, and what makes two exports equal."""
    labels = predictor.label_map
    return {
        'model': predictor.description,
        'formats': list(formats),
        'files': {f: FORMATS[f] for f in formats},
        'image_size': list(image_hw),
        'batch': 'dynamic' if batch is None else batch,
        'inputs': {deploy.INPUT_NAME: f'uint8 [B, {image_hw[0]}, {image_hw[1]}, 3] RGB'},
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


def export(
    predictor: Predictor,
    out: str | Path,
    formats=('stablehlo', 'onnx'),
    image_hw=None,
    batch: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the export folder `out` (see the module docstring); returns it."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f'--format: unknown {unknown or formats}; known: {", ".join(FORMATS)}')
    image_hw = tuple(image_hw or predictor.image_hw)
    anchors.check_image_size(image_hw)
    if batch is not None and batch < 1:
        raise ValueError(f'--batch must be >= 1 or dynamic, got {batch}')
    out = Path(out)
    spec = manifest(predictor, formats, image_hw, batch)
    existing = out / 'export.json'
    if existing.is_file() and not overwrite:
        if json.loads(existing.read_text()) != json.loads(json.dumps(spec)):
            raise ValueError(
                f'--out {out} holds another export ({existing}); pass --overwrite '
                'to replace it or choose another folder'
            )
    elif out.exists() and any(out.iterdir()) and not existing.is_file() and not overwrite:
        raise ValueError(f'--out {out} is not empty and holds no export; choose another folder')
    out.mkdir(parents=True, exist_ok=True)
    detect = deploy.detector_function(predictor, image_hw)
    for fmt in formats:
        writer = deploy.write_stablehlo if fmt == 'stablehlo' else deploy.write_onnx
        writer(detect, image_hw, batch, out / FORMATS[fmt])
    shutil.copyfile(exported_detect.__file__, out / 'detect.py')
    existing.write_text(json.dumps(spec, indent=1))
    return out


def main(argv) -> None:
    del argv
    cli.start()
    f = flags.FLAGS
    image_hw = tuple(int(v) for v in f.image_size) if f.image_size else None
    batch = None if f.batch == 'dynamic' else _int('--batch', f.batch)
    predictor = cli.exit_on_bad_input('export', load_predictor, f.model, **cli.model_options())
    overrides = {
        k: getattr(f, k) for k in ('score_threshold', 'max_detections') if getattr(f, k) is not None
    }
    predictor.postprocess = cli.exit_on_bad_input(
        'export', dataclasses.replace, predictor.postprocess, **overrides
    )
    out = cli.exit_on_bad_input(
        'export', export, predictor, f.out, tuple(f.format), image_hw, batch, f.overwrite
    )
    print(
        f'{predictor.description}: exported {", ".join(f.format)} '
        f'({"x".join(map(str, image_hw or predictor.image_hw))}, batch {f.batch}) to {out}; '
        f'try: python {out / "detect.py"} IMAGE'
    )


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f'export: {name} must be an integer or "dynamic", got {value!r}') from None


if __name__ == '__main__':
    cli.define_model_flags()
    cli.define_cache_flag()
    flags.DEFINE_string('out', None, 'folder to write the export to')
    flags.DEFINE_list('format', ['stablehlo', 'onnx'], f'any of {", ".join(FORMATS)}')
    flags.DEFINE_list('image_size', None, "H,W of the exported input (default: the model's)")
    flags.DEFINE_string('batch', 'dynamic', 'a batch size, or "dynamic" (any)')
    flags.DEFINE_bool('overwrite', False, 'replace an export already in --out')
    flags.DEFINE_float('score_threshold', None, "keep detections above this (default: the model's)")
    flags.DEFINE_integer('max_detections', None, "detections per image (default: the model's)")
    flags.mark_flags_as_required(['model', 'out'])
    app.run(main)
