"""Run an exported RetinaNet on image files, with onnxruntime or with JAX alone.

  python detect.py photo.jpg [more.png ...] [--format onnx|stablehlo]
  python detect.py aerial.png --tile_size 512 [--tile_overlap 0.2]

`python -m retinanet_jax export` copies this file into every export folder as
detect.py, next to export.json, detector.onnx and / or detector.stablehlo. It imports nothing
of retinanet_jax: only numpy, PIL, and onnxruntime (ONNX) or jax (StableHLO). It letterboxes
each image to the export's static size (resize keeping the aspect ratio, pad bottom / right
with the mean colour), runs the detector, maps boxes back to the image's pixels and prints one
JSON line per image:
{"file", "detections": [{"label", "category_id", "score", "box": [x1, y1, x2, y2]}]}.

--tile_size N (large images, small objects): each image is cut into overlapping N-pixel windows
(--tile_overlap, 0.2), each window (padded to N x N where the image is shorter) letterboxed and
run as an image, in batches of 8 where the export's batch is dynamic; the detections mapped back
and merged by tile_merge.py (copied beside this file; numpy only), as retinanet_jax's predict
--tile_size does.
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


def detect_tiled(detect, image: Image.Image, manifest: dict, tile: int, overlap: float):
    """(boxes [N, 4] in the image's pixels, scores [N], labels [N]) by windows (module doc)."""
    from tile_merge import merge_detections, tile_windows, window_pixels

    pixels = np.asarray(image.convert('RGB'))
    windows = tile_windows(pixels.shape[:2], tile, overlap)
    canvases, scales = [], []
    for window in windows:
        padded = window_pixels(pixels, window, tile, manifest['pad_value'])
        canvas, scale = letterbox(
            Image.fromarray(padded), manifest['image_size'], manifest['pad_value']
        )
        canvases.append(canvas)
        scales.append(scale)
    step = 8 if manifest['batch'] == 'dynamic' else int(manifest['batch'])
    parts = []
    for start in range(0, len(canvases), step):
        batch = np.stack(canvases[start : start + step])
        if len(batch) < step:  # a fixed batch size: the last batch padded
            batch = np.concatenate([batch, np.repeat(batch[-1:], step - len(batch), 0)])
        boxes, scores, labels, count = detect(batch)
        for k in range(min(step, len(canvases) - start)):
            n = int(count[k])
            parts.append(
                (windows[start + k], boxes[k, :n] / scales[start + k], scores[k, :n], labels[k, :n])
            )
    merged = merge_detections(parts, pixels.shape[:2], manifest['postprocess']['nms_iou_threshold'])
    return merged['boxes'], merged['scores'], merged['labels']


def detect_whole(detect, image: Image.Image, manifest: dict):
    """(boxes [N, 4] in the image's pixels, scores [N], labels [N]) of the letterboxed image."""
    canvas, scale = letterbox(image, manifest['image_size'], manifest['pad_value'])
    boxes, scores, labels, count = detect(canvas[None])
    n = int(count[0])
    return boxes[0, :n].astype(np.float64) / scale, scores[0, :n], labels[0, :n]


def option(argv: list[str], name: str, default):
    return type(default)(argv[argv.index(name) + 1]) if name in argv else default


def main(argv: list[str]) -> None:
    folder = Path(__file__).resolve().parent
    sys.path.insert(0, str(folder))  # tile_merge.py
    manifest = json.loads((folder / 'export.json').read_text())
    fmt = option(argv, '--format', manifest['formats'][0])
    tile, overlap = option(argv, '--tile_size', 0), option(argv, '--tile_overlap', 0.2)
    valued = ('--format', '--tile_size', '--tile_overlap')
    files = [a for i, a in enumerate(argv) if not a.startswith('--') and argv[i - 1] not in valued]
    detect = load(folder, fmt)
    for file in files:
        image = Image.open(file)
        if tile:
            boxes, scores, labels = detect_tiled(detect, image, manifest, tile, overlap)
        else:
            boxes, scores, labels = detect_whole(detect, image, manifest)
        found = [
            {
                'label': manifest['names'][int(label)],
                'category_id': manifest['category_ids'][int(label)],
                'score': round(float(score), 4),
                'box': [round(float(v), 2) for v in box],
            }
            for box, score, label in zip(boxes, scores, labels, strict=True)
        ]
        print(json.dumps({'file': file, 'detections': found}))


if __name__ == '__main__':
    main(sys.argv[1:])
