"""Inference of one image (host uint8 in, detections back on the host): R50-FPN forward +
post-processing, against torchvision's RetinaNet in eval mode, same weights.

  ours         a torchvision retinanet_resnet50_fpn state dict converted
               (inference.load_predictor), its predict step with the
               torchvision presets (anchors, score 0.05, top-1000 per level, NMS 0.5, 300 dets)
  torchvision  retinanet_resnet50_fpn(min_size=max_size=size).eval() under inference_mode:
               its transform (normalise, batch), backbone, head, postprocess_detections and the
               mapping back to the image

Random weights, except the class bias (-2) so that every level's top-1000 fills and NMS sees
5,000 candidates, as on a busy image. CPU: 800x800, float32. GPU: 800x800, bfloat16 (ours:
the model's bf16 path; torchvision: torch.autocast bf16). Each side runs in its own process
(peak memory is its own); both read the same random weights from one .npz. On the CPU the
same converted model is also exported (inference/export.py) and run outside our code,
onnxruntime for ONNX and JAX alone for StableHLO, at the export's size: the image's rounded
up to a multiple of 32 (800x800; 896x896 before 2026-12-07, when sides had to be multiples of
128), as a user of the files does.
"""

import dataclasses
import tempfile
from pathlib import Path

from bench.isolated import child_main, measure, time_torch, xla_memory_mib


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    import numpy as np
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    size, runs = (64, 1) if quick else (800, 10 if device == 'cpu' else 50)
    dtype = 'bfloat16' if device == 'gpu' and not quick else 'float32'
    torch.manual_seed(0)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    # Random weights score every anchor ~0.01, under the 0.05 threshold; a class bias of -2
    # (scores ~0.12) fills every level's top-1000, as a busy image does: the heavy case.
    model.head.classification_head.cls_logits.bias.data.fill_(-2.0)
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / 'retinanet_v1.npz')
        np.savez(weights, **{k: v.numpy() for k, v in model.state_dict().items()})
        options = dict(weights=weights, size=size, dtype=dtype, runs=runs, device=device)
        ref = measure('bench.inference', 'torchvision', threads=threads, **options)
        ours = measure('bench.inference', 'ours', threads=threads, **options)
        exported = []
        # The same model exported (inference/export.py), run outside our code (CPU; not in
        # --quick, whose export tests/test_export.py covers).
        if device == 'cpu' and not quick:
            export_dir = str(Path(tmp) / 'export')
            measure('bench.inference', 'export', threads=threads, export_dir=export_dir, **options)
            for fmt in ('onnx', 'stablehlo'):
                exported.append(
                    measure(
                        'bench.inference', fmt, threads=threads, export_dir=export_dir, **options
                    )
                )
    what = f'inference {size}x{size} {dtype}'
    ref.name = f'torchvision: {what}' + (' (autocast)' if dtype == 'bfloat16' else '')
    ours.name, ours.reference = f'ours: {what}', ref.name
    runtimes = {'onnx': 'onnxruntime', 'stablehlo': 'JAX'}
    for fmt, t in zip(('onnx', 'stablehlo'), exported, strict=False):
        t.name, t.reference = f'ours exported, {fmt} in {runtimes[fmt]}: {what}', ref.name
    return [ours, *exported, ref]


def child(side, *, weights, size, dtype, runs, device, threads, export_dir=None):
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    if side == 'ours':
        return ours_inference(weights, image, dtype, runs, device)
    if side == 'export':
        return export_model(weights, image, export_dir)
    if side in ('onnx', 'stablehlo'):
        return exported_inference(side, image, export_dir, runs, threads)
    return torchvision_inference(weights, image, dtype, runs, device, threads)


def export_model(weights, image, export_dir):
    """The converted model with the torchvision settings, exported at the image size."""
    import time

    from bench.timing import Timing
    from retinanet_jax import inference
    from retinanet_jax.inference import export
    from retinanet_jax.ops import anchors as anchor_lib

    predictor = converted_predictor(inference, weights, image.shape[0])
    start = time.perf_counter()
    size = anchor_lib.padded_size(image.shape[:2])  # 800 -> 800
    export.export_model(predictor, export_dir, ('onnx', 'stablehlo'), size, batch=1)
    seconds = time.perf_counter() - start
    print(f'export: {seconds:.0f} s')
    return Timing('export', seconds * 1e3, seconds * 1e3, 1, 0.0)


def converted_predictor(inference, weights, size):
    """A Predictor of the converted weights with torchvision's post-processing (300 dets)."""
    from retinanet_jax.ops.postprocess import PostprocessConfig

    predictor = inference.load_predictor(weights, short_side=size, max_side=size)
    return dataclasses.replace(predictor, postprocess=PostprocessConfig.torchvision())


def exported_inference(fmt, image, export_dir, runs, threads):
    """The exported file through detect.py's loader (onnxruntime, or jax.export alone)."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    import numpy as np

    from bench.timing import time_fn

    sys.modules['retinanet_jax'] = None  # nothing of this package below this line
    spec = importlib.util.spec_from_file_location('detect', f'{export_dir}/detect.py')
    detect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect)
    if fmt == 'onnx':
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(f'{export_dir}/detector.onnx', options)
        run = lambda images: session.run(None, {'images': images})  # noqa: E731
    else:
        run = detect.load(Path(export_dir), fmt)
    # The image padded bottom / right to the export's size, as export.json says a user does.
    meta = json.loads(Path(export_dir, 'export.json').read_text())
    h, w = meta['image_size']
    batch = np.full((1, h, w, 3), meta['pad_value'], np.uint8)
    batch[0, : image.shape[0], : image.shape[1]] = image
    t = time_fn(fmt, lambda: run(batch), runs)
    count = int(run(batch)[3][0])
    print(f'{fmt}: {count} dets')
    return t


def ours_inference(weights, image, dtype, runs, device):
    import time

    import jax
    import numpy as np

    from bench.timing import flops_of, time_fn
    from retinanet_jax import inference, sharding
    from retinanet_jax.ops.postprocess import PostprocessConfig

    size = image.shape[:2]  # the predict step at the image's own size, as torchvision runs it
    predictor = inference.load_predictor(weights, short_side=size[0], max_side=size[1], dtype=dtype)
    predictor = dataclasses.replace(
        predictor,
        postprocess=PostprocessConfig.torchvision(),
        input=dataclasses.replace(predictor.input, image_size=size),
    )
    state, mesh, predict = predictor.state, predictor.mesh, predictor.predict
    batch = {
        'image': image[None],
        'content_size': np.array([size], np.int32),
        'scale': np.ones((1, 2), np.float32),
    }
    threshold = predict.threshold
    start = time.perf_counter()
    compiled = predict.program.lower(state, sharding.to_global(batch, mesh), threshold).compile()
    compile_ms = (time.perf_counter() - start) * 1e3

    def infer():
        return jax.device_get(compiled(state, sharding.to_global(batch, mesh), threshold))

    t = time_fn('ours', infer, runs)
    t.flops = flops_of(compiled)
    dets = infer()
    print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}; {dets["valid"].sum()} dets')
    t.first_call_ms = compile_ms
    if device == 'gpu':
        t.peak_mib = xla_memory_mib(compiled)
    return t


def torchvision_inference(weights, image, dtype, runs, device, threads):
    import numpy as np
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.set_num_threads(threads)
    dev = torch.device('cuda' if device == 'gpu' else 'cpu')
    if device == 'gpu':
        torch.backends.cudnn.benchmark = True
    size = image.shape[0]
    model = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=size, max_size=size
    )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(weights).items()})
    model = model.to(dev).eval()
    amp = dtype == 'bfloat16'

    def infer():
        x = torch.from_numpy(image).permute(2, 0, 1).to(dev).float().div(255)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model([x])[0]
        return {k: v.cpu() for k, v in out.items()}

    t = time_torch(infer, runs, device)
    print(f'torch {torch.__version__}; {len(infer()["boxes"])} dets')
    return t


if __name__ == '__main__':
    child_main(child)
