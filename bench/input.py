"""Training input pipeline throughput: JPEG decode + augment + batch, at two canvases.

Data: a COCO-format folder of 640x480 JPEGs (COCO's typical size; rendered from `shapes`,
written to a temporary directory), read through the `coco_folder` source and
`pipeline.train_dataset`, batch 16, with reading threads (a CPU run's default) and 1, 2 and
one per core worker processes (config.data.read_workers; one per core: a GPU run's default):
  640x640    scale jitter 0.8-1.25 + crop, flip, normalise, pad to 640x640
  1024x1024  configs/coco.py's input exactly: short side 800, long side <= 1024, flip, pad
Reference: the torchvision route a PyTorch user would take on the same files: a DataLoader
with 2 workers, torchvision.io decode_jpeg, transforms.v2 resizing as ours (ScaleJitter +
RandomCrop at 640, Resize(800, max_size=1024) + padding at 1024), RandomHorizontalFlip,
Normalize.

It ends with the rate a host of N cores would reach at the COCO canvas (the most workers' rate
per core times N: workers scale with cores, 2 gave 1.81-2.21x 1 in two runs on 2 cores) against
what N GPUs need at our measured train step (GPU_IMAGES_PER_SECOND).
"""

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path


def write_folder(directory: Path, n: int) -> dict:
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


# Ours, R50-FPN 1024x1024 batch 16 bf16 on one H100 SXM (BENCHMARKS.md, "GPU"): the rate one
# GPU consumes once input keeps up.
GPU_IMAGES_PER_SECOND = 258.8


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    # torch and torchvision must be imported before TensorFlow (tests/conftest.py).
    import torch
    import torchvision.io
    import torchvision.transforms.v2  # noqa: F401

    from configs import coco
    from retinanet_jax import settings
    from retinanet_jax.data import pipeline, sources

    n, batches, batch_size = (16, 2, 8) if quick else (256, 60, 16)
    canvases = {  # size -> our input settings
        640: pipeline.InputConfig(
            image_size=(640, 640), short_side=640, max_side=640, scale_jitter=(0.8, 1.25)
        ),
        1024: settings.from_config(coco.get_config()).input,
    }
    if quick:  # a smoke test of the code
        canvases = {64: dataclasses.replace(canvases[640], image_size=(64, 64), short_side=64,
                                            max_side=64)}  # fmt: skip
    results, per_core = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        options = write_folder(Path(tmp), n)
        source = sources.make_source('coco_folder', **options)
        for size, config in canvases.items():
            dataset = pipeline.train_dataset(source, config, batch_size)
            ref_name = f'torchvision DataLoader (2 workers): {size}x{size}'
            # threads in this process, then 1, 2 and one per core worker processes (spawned
            # once: their start-up is the warm-up; not in --quick, a smoke test of the code)
            for workers in (0,) if quick else sorted({0, 1, 2, len(os.sched_getaffinity(0))}):
                it = pipeline.train_iterator(dataset, workers=workers)
                rate, warm = _images_per_second(it, batch_size, batches)
                it.close()  # its reader threads or worker processes stop
                how = (
                    f'{workers} worker process' + ('es' if workers > 1 else '')
                    if workers
                    else 'threads'
                )
                name = f'ours: grain train pipeline {size}x{size}, {how}'
                cores = workers or os.cpu_count()  # a worker runs on one core; threads on all
                results.append(_as_timing(name, rate, batches, warm, ref_name, cores))
                per_core[size] = rate / cores, how  # the last: the most workers

            torch.set_num_threads(1)  # per worker; two workers use the two cores
            loader = torch.utils.data.DataLoader(
                _TorchFolder(Path(options['image_dir']), config),
                batch_size=batch_size,
                shuffle=True,
                num_workers=threads,
                drop_last=True,
                persistent_workers=True,
                # Not fork: this process runs JAX's and the pipeline's threads, and a forked
                # child that inherits a held lock hangs (it did, in `python -m bench all`).
                multiprocessing_context='forkserver',
            )
            rate, warm = _images_per_second(_forever(loader), batch_size, batches)
            results.append(_as_timing(ref_name, rate, batches, warm, None, threads))
            del loader  # its workers stop
    print('(rows give ms per image: 1000 / images per second)')
    size = max(per_core)
    print(host_table(*per_core[size], size))
    return results


def host_table(per_core: float, how: str, size: int) -> str:
    """Markdown: what a host of N cores reads at `per_core` images/s per core (measured `how`),
    and how many GPUs at GPU_IMAGES_PER_SECOND each that feeds."""
    lines = [
        f'\nA host of N cores at {per_core:.1f} images/s per core ({size}x{size}, {how}), '
        f'against GPUs at {GPU_IMAGES_PER_SECOND} images/s each (our train step; '
        f'8 GPUs need {8 * GPU_IMAGES_PER_SECOND:.0f}):',
        '| cores | images/s | GPUs fed |',
        '|---|---|---|',
    ]
    for cores in (8, 16, 32, 64, 96, 128):
        rate = per_core * cores
        lines.append(f'| {cores} | {rate:.0f} | {rate / GPU_IMAGES_PER_SECOND:.1f} |')
    return '\n'.join(lines)


def _as_timing(name, images_per_second, runs, warm_s, reference, cores):
    from bench.timing import Timing

    per_core = images_per_second / cores
    print(f'{name}: {images_per_second:.1f} images/s ({per_core:.1f} per core)')
    ms = 1000.0 / images_per_second
    return Timing(name, ms, ms, runs, warm_s * 1e3, reference)


def _forever(loader):
    while True:
        yield from loader


class _TorchFolder:
    """The same JPEGs through torchvision.io and transforms.v2 (images only, no boxes), resized
    as `config` (an InputConfig) resizes ours."""

    def __init__(self, image_dir: Path, config):
        from torchvision.transforms import v2

        size = config.image_size[0]
        if config.scale_jitter:
            resize = [v2.ScaleJitter((size, size), scale_range=config.scale_jitter, antialias=True)]
        else:
            resize = [v2.Resize(config.short_side, max_size=config.max_side, antialias=True)]
        self.files = sorted(image_dir.glob('*.jpg'))
        self.transform = v2.Compose(
            [
                *resize,
                v2.RandomCrop(size, pad_if_needed=True),  # pads to the canvas
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
