"""Run an exported RetinaNet on image files, with onnxruntime or with JAX alone.

  python detect.py photo.jpg [more.png ...] [--format onnx|stablehlo]

`python -m retinanet_jax export` copies this file into every export folder as
detect.py, next to export.json, detector.onnx and / or detector.stablehlo. It imports nothing
of retinanet_jax: only numpy, PIL, and onnxruntime (ONNX) or jax (StableHLO). It letterboxes
each image to the export's static size (resize keeping the aspect ratio, pad bottom / right
with the mean colour), runs the detector, maps boxes back to the image's pixels and prints one
JSON line per image:
{"file", "detections": [{"label", "category_id", "score", "box": [x1, y1, x2, y2]}]}.
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def letterbox(image: Image.Image, size, pad_value):
    """(uint8 [H, W, 3] canvas, scale): the image resized to fit (H, W), padded."""
    h, w = size
    scale = min(h / image.height, w / image.width)
    resized = image.convert('RGB').resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.BILINEAR,
    )
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[...] = pad_value
    canvas[: resized.height, : resized.width] = np.asarray(resized)
    return canvas, scale


def load(folder: Path, fmt: str):
    """A function uint8 [B, H, W, 3] -> (boxes, scores, labels, num_detections), numpy."""
    if fmt == 'onnx':
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / 'detector.onnx'))
        return lambda images: session.run(None, {'images': images})
    import jax

    with open(folder / 'detector.stablehlo', 'rb') as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    return lambda images: [np.asarray(x) for x in exported.call(images)]


def main(argv: list[str]) -> None:
    folder = Path(__file__).resolve().parent
    manifest = json.loads((folder / 'export.json').read_text())
    fmt = argv[argv.index('--format') + 1] if '--format' in argv else manifest['formats'][0]
    files = [a for i, a in enumerate(argv) if not a.startswith('--') and argv[i - 1] != '--format']
    detect = load(folder, fmt)
    for file in files:
        canvas, scale = letterbox(Image.open(file), manifest['image_size'], manifest['pad_value'])
        boxes, scores, labels, count = detect(canvas[None])
        found = [
            {
                'label': manifest['names'][int(labels[0, i])],
                'category_id': manifest['category_ids'][int(labels[0, i])],
                'score': round(float(scores[0, i]), 4),
                'box': [round(float(v) / scale, 2) for v in boxes[0, i]],
            }
            for i in range(int(count[0]))
        ]
        print(json.dumps({'file': file, 'detections': found}))


if __name__ == '__main__':
    main(sys.argv[1:])
