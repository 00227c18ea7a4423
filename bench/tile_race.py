"""Sliced inference against the peer: one 4,096 x 4,096 image (the demo's shapes pasted on the
mean colour), 512-px windows with a 20 % overlap, torchvision's retinanet_resnet50_fpn (random
weights, torch.manual_seed(0); the same state dict on both sides), each side in its own process:

  ours:  tiling.predict_tiled: the windows in batches of 8 through the one jitted predict step
         (torchvision's post-processing settings), our merge;
  SAHI:  sahi.predict.get_sliced_prediction with torchvision's model (its transform set to
         512 px, so that windows run at their own scale as ours do; no extra whole-image
         pass), one window at a time, SAHI's own merge (GREEDYNMM, IOS 0.5) at the same
         score threshold (0.05).

Reported: the median wall time of one image over 2 runs after a warm-up call on a 1,024-px
image (compilation apart), windows per second, peak RSS, detections. SAHI is installed without
its dependencies so that OpenCV stays ours (requirements-nodeps.txt; tests/test_bench.py checks
cv2's version).

  python -m bench tiles     # with the synthetic-scene check (bench/tiles.py)
"""

import time

import numpy as np

SIDE, TILE, OVERLAP = 4096, 512, 0.2


def image(side: int) -> np.ndarray:
    from retinanet_jax.data import shapes
    from retinanet_jax.ops.normalization import PAD_VALUE

    rng = np.random.default_rng(0)
    picture = np.empty((side, side, 3), np.uint8)
    picture[...] = PAD_VALUE
    for k in range((side // 128) ** 2 // 8):  # one patch in eight
        y, x = rng.integers(0, side - 128, 2)
        picture[y : y + 128, x : x + 128] = shapes.generate_example(k, image_size=128)['image']
    return picture


def child(side, *, weights, size, runs, threads):
    import torch

    torch.set_num_threads(threads)
    scene, warm = image(size), image(TILE * 2)
    if side == 'ours':
        from retinanet_jax.inference import load_predictor, tiling

        predictor = load_predictor(weights, short_side=TILE, max_side=TILE)
        tiles = tiling.TileConfig(TILE, OVERLAP, 8)

        def predict(picture):
            return len(tiling.predict_tiled(predictor, [picture], tiles)[0]['boxes'])
    else:
        from sahi import AutoDetectionModel
        from sahi.predict import get_sliced_prediction
        from torchvision.models.detection import retinanet_resnet50_fpn

        net = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
        net.load_state_dict(torch.load(weights))
        net.transform.min_size, net.transform.max_size = (TILE,), TILE
        model = AutoDetectionModel.from_pretrained(
            model_type='torchvision', model=net.eval(), confidence_threshold=0.05, device='cpu'
        )

        def predict(picture):
            result = get_sliced_prediction(
                picture,
                model,
                slice_height=TILE,
                slice_width=TILE,
                overlap_height_ratio=OVERLAP,
                overlap_width_ratio=OVERLAP,
                perform_standard_pred=False,
                postprocess_type='GREEDYNMM',
                postprocess_match_metric='IOS',
                postprocess_match_threshold=0.5,
                verbose=0,
            )
            return len(result.object_prediction_list)

    from bench.timing import Timing

    start = time.perf_counter()
    predict(warm)  # compiles (ours) / warms up (torch): 2 x 2 windows
    first = time.perf_counter() - start
    samples, found = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        found = predict(scene)
        samples.append(time.perf_counter() - start)
    name = 'ours' if side == 'ours' else 'SAHI + torchvision'
    ms = [s * 1e3 for s in samples]
    return Timing(
        name, float(np.median(ms)), min(ms), runs, first * 1e3, extra={'detections': found}
    )


def race(quick: bool, threads: int) -> dict:
    """{side: (wall s, windows/s, peak RSS GiB, detections)}, each side in its own process."""
    import tempfile

    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    from bench import isolated
    from retinanet_jax.inference import tiling

    size = TILE * 2 if quick else SIDE
    windows = len(tiling.tile_windows((size, size), TILE, OVERLAP))
    with tempfile.TemporaryDirectory() as tmp:
        weights = f'{tmp}/r50.pth'
        torch.manual_seed(0)
        torch.save(
            retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), weights
        )
        out = {}
        for side in ('ours', 'sahi'):
            t = isolated.measure(
                'bench.tile_race',
                side,
                weights=weights,
                size=size,
                runs=1 if quick else 2,
                threads=threads,
            )
            seconds = t.median_ms / 1e3
            out[side] = (seconds, windows / seconds, t.peak_mib / 1024, t.extra['detections'])
    print(
        f'\n## sliced inference race: {size} px, {windows} windows of {TILE} px, overlap {OVERLAP}'
    )
    print('| side | wall s | windows/s | peak RSS GiB | detections |\n|---|---|---|---|---|')
    for side, (s, rate, peak, n) in out.items():
        print(f'| {side} | {s:.1f} | {rate:.2f} | {peak:.2f} | {n} |')
    print(f'ours / SAHI: {out["sahi"][0] / out["ours"][0]:.2f}x faster')
    return out


if __name__ == '__main__':
    from bench.isolated import child_main

    child_main(child)
