"""Peak memory of sliced inference on a raster larger than memory is comfortable with: a
20,000 x 20,000 RGB TIFF (1.2 GB of pixels; tiled 512, deflate), mostly background with the
demo's shapes pasted into one tile in ten, predicted by the predict command with
--tile_size=512 --tile_overlap=0.2 (data/rasters.py reads it window by window) in a process of
its own, whose peak resident memory (ru_maxrss) and wall time are reported. The model: the smoke
run (configs/smoke.py, trained here first unless RETINANET_JAX_SMOKE_RUN names one), whose
64-px canvas makes each 512-px window a small computation: the figure is the reading's and the
merge's, not the model's.

  python -m bench rasters            # 20,000 px a side; --quick: 2,000
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OWN_TABLE = True
ROOT = Path(__file__).resolve().parents[1]
TILE = 512


def write_raster(path: Path, side: int) -> int:
    """A side x side RGB TIFF written tile by tile (never whole in memory); the objects in it."""
    import tifffile

    from retinanet_jax.data import shapes
    from retinanet_jax.ops.normalization import PAD_VALUE

    rng = np.random.default_rng(0)
    count = 0

    def tiles():
        nonlocal count
        for _ in range((-(-side // TILE)) ** 2):
            tile = np.empty((TILE, TILE, 3), np.uint8)
            tile[...] = PAD_VALUE
            if rng.random() < 0.1:
                example = shapes.generate_example(int(rng.integers(1 << 30)), image_size=128)
                y, x = rng.integers(0, TILE - 128, 2)
                tile[y : y + 128, x : x + 128] = example['image']
                count += len(example['boxes'])
            yield tile

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(TILE, TILE),
        compression='zlib',
        photometric='rgb',
    )
    return count


MEASURE = """
import resource, sys, time
from pathlib import Path
from retinanet_jax.commands.predict import predict_files
from retinanet_jax.inference import load_predictor, tiling
start = time.perf_counter()
predictor = load_predictor(sys.argv[1])
found = predict_files(predictor, [sys.argv[2]], Path(sys.argv[3]),
                      tiles=tiling.TileConfig(512, 0.2, 8))
print(len(found), time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> dict:
    del threads, device
    side = 2_000 if quick else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = os.environ.get('RETINANET_JAX_SMOKE_RUN')
        if not model:
            model = str(tmp / 'smoke')
            subprocess.run(
                [sys.executable, 'train.py', '--config=configs/smoke.py', f'--workdir={model}'],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        start = time.perf_counter()
        objects = write_raster(tmp / 'scene.tif', side)
        written = time.perf_counter() - start
        size = (tmp / 'scene.tif').stat().st_size
        out = subprocess.run(
            [sys.executable, '-c', MEASURE, model, str(tmp / 'scene.tif'), str(tmp / 'out')],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        detections, seconds, peak_kib = int(out[-3]), float(out[-2]), int(out[-1])
        picture = (tmp / 'out' / 'scene.png').stat().st_size
    result = {
        'side': side,
        'raw_gb': side * side * 3 / 1e9,
        'file_mb': size / 1e6,
        'objects': objects,
        'write_seconds': written,
        'predict_seconds': seconds,
        'peak_rss_gb': peak_kib / 1e6 * 1.024,
        'detections': detections,
        'picture_kb': picture / 1e3,
    }
    print(
        f'{side:,} x {side:,} px TIFF ({result["raw_gb"]:.2f} GB of pixels, {size / 1e6:.0f} MB '
        f'on disk, {objects} objects; written in {written:.0f} s): predict by 512-px windows '
        f'{seconds:.0f} s, peak RSS {result["peak_rss_gb"]:.2f} GB, {detections} detections'
    )
    return result
