"""Training input pipeline throughput: JPEG decode + augment + batch at 640x640.

Data: a COCO-format folder of 640x480 JPEGs (rendered from `shapes`, written to a temporary
directory), read through the `coco_folder` source and `pipeline.train_dataset` (scale jitter
0.8-1.25 + crop, flip, normalise, pad to 640x640, batch 16). Reference: the torchvision route a
PyTorch user would take on the same files: a DataLoader with 2 workers, torchvision.io
decode_jpeg, v2 RandomResize-style resize + RandomHorizontalFlip + Normalize, padding to 640.
"""

import json
import os
import tempfile
import time
from pathlib import Path


def _write_folder(directory: Path, n: int) -> dict:
    from PIL import Image

    from retinanet_jax.data import shapes

    (directory / 'images').mkdir()
    images, annotations = [], []
    for i in range(n):
        e = shapes.generate_example(i, image_size=640)
        Image.fromarray(e['image'][:480]).save(directory / 'images' / f'{i}.jpg', quality=90)
        images.append({'id': i, 'file_name': f'{i}.jpg', 'height': 480, 'width': 640})
        for j, (box, label) in enumerate(zip(e['boxes'], e['labels'], strict=True)):
            x1, y1, x2, y2 = (float(v) for v in box)
            y2 = min(y2, 480.0)
            if y2 - y1 >= 2:
                annotations.append(
                    {
                        'id': i * 10 + j,
                        'image_id': i,
                        'category_id': int(label) + 1,
                        'bbox': [x1, y1, x2 - x1, y2 - y1],
                        'iscrowd': 0,
                    }
                )
    categories = [
        {'id': k + 1, 'name': name} for k, name in enumerate(('circle', 'square', 'triangle'))
    ]
    (directory / 'train.json').write_text(
        json.dumps({'images': images, 'annotations': annotations, 'categories': categories})
    )
    return {
        'annotations': {'train': str(directory / 'train.json')},
        'image_dir': str(directory / 'images'),
    }


def _images_per_second(iterator, batch_size: int, batches: int) -> tuple[float, float]:
    start = time.perf_counter()
    next(iterator)  # warm-up: threads start, the shuffle buffer fills
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch_size * batches / (time.perf_counter() - start), warm


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    # torch and torchvision must be imported before TensorFlow (tests/conftest.py).
    import torch
    import torchvision.io
    import torchvision.transforms.v2  # noqa: F401

    from retinanet_jax.data import pipeline, sources

    size, n, batches, batch_size = (64, 16, 2, 8) if quick else (640, 256, 60, 16)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        options = _write_folder(Path(tmp), n)
        source = sources.make_source('coco_folder', **options)
        config = pipeline.InputConfig(
            image_size=(size, size),
            short_side=size,
            max_side=size,
            scale_jitter=(0.8, 1.25),
        )
        dataset = pipeline.train_dataset(source, config, batch_size)
        ref_name = f'torchvision DataLoader (2 workers): {size}x{size}'
        # threads in this process (the default), then 1 and 2 worker processes (spawned once:
        # their start-up is the warm-up; not in --quick, a smoke test of the code)
        for workers in (0,) if quick else (0, 1, 2):
            it = pipeline.train_iterator(dataset, workers=workers)
            rate, warm = _images_per_second(it, batch_size, batches)
            it.close()  # its reader threads or worker processes stop
            how = (
                f'{workers} worker process' + ('es' if workers > 1 else '')
                if workers
                else 'threads'
            )
            name = f'ours: grain train pipeline {size}x{size}, {how}'
            results.append(_as_timing(name, rate, batches, warm, ref_name))

        torch.set_num_threads(1)  # per worker; two workers use the two cores
        loader = torch.utils.data.DataLoader(
            _TorchFolder(Path(options['image_dir']), size),
            batch_size=batch_size,
            shuffle=True,
            num_workers=threads,
            drop_last=True,
            persistent_workers=True,
            # Not fork: this process runs JAX's and the pipeline's threads, and a forked child
            # that inherits a held lock hangs (it did, in `python -m bench all`).
            multiprocessing_context='forkserver',
        )
        rate, warm = _images_per_second(_forever(loader), batch_size, batches)
        results.append(_as_timing(ref_name, rate, batches, warm, None))
    print('(rows give ms per image: 1000 / images per second)')
    return results


def _as_timing(name, images_per_second, runs, warm_s, reference):
    from bench.timing import Timing

    per_core = images_per_second / os.cpu_count()
    print(f'{name}: {images_per_second:.1f} images/s ({per_core:.1f} per core)')
    ms = 1000.0 / images_per_second
    return Timing(name, ms, ms, runs, warm_s * 1e3, reference)


def _forever(loader):
    while True:
        yield from loader


class _TorchFolder:
    """The same JPEGs through torchvision.io and transforms.v2 (images only, no boxes)."""

    def __init__(self, image_dir: Path, size: int):
        from torchvision.transforms import v2

        self.files = sorted(image_dir.glob('*.jpg'))
        self.transform = v2.Compose(
            [
                v2.ScaleJitter((size, size), scale_range=(0.8, 1.25), antialias=True),
                v2.RandomCrop(size, pad_if_needed=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch_float32(), scale=True),
                v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from torchvision.io import decode_jpeg, read_file

        return self.transform(decode_jpeg(read_file(str(self.files[i]))))


def torch_float32():
    import torch

    return torch.float32
