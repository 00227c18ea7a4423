"""The COCO config's train step fed by the real input pipeline, against the same step on one
batch already on the device: how much of the step's rate the host's input keeps.

  python -m bench fed [--device gpu] [--quick]

Data: bench.input's COCO-format folder of 640x480 JPEGs (rendered `shapes` scenes; its
categories padded to COCO's 80 so that configs/coco.py's model takes it), read with
configs/coco.py's input exactly (short side 800, long side <= 1024, flip, 1024x1024 canvas)
through `pipeline.train_dataset`, in the worker processes a run would use on this device
(`DataConfig.workers_for`: one per core on a GPU, threads on a CPU).
  synthetic  the step, compiled once, on one of those batches put on the device once
  fed        the same step on the pipeline's batches, each put on the device as train.py does
             (sharding.to_global), the host reading ahead while the device computes
Each side runs `runs` steps after warm-up steps and is timed over all of them, with one
block at the end (JAX dispatches asynchronously: the host is free to read the next batch
while a step runs, as in training); the fed side also sums the time spent waiting for
batches. GPU: R50-FPN 1024x1024, batch 16, bf16. CPU: the same at 256x256, batch 2, float32
(a CPU step outlasts its input; the row is a check of the wiring). --quick: ResNet-18, 64x64.
"""

import json
import tempfile
import time
from pathlib import Path

from bench.timing import Timing


def settings_for(quick: bool, device: str) -> dict:
    if quick:
        return dict(size=64, batch=2, dtype='float32', depth=18, runs=2, images=8)
    if device == 'gpu':
        return dict(size=1024, batch=16, dtype='bfloat16', depth=50, runs=30, images=512)
    return dict(size=256, batch=2, dtype='float32', depth=50, runs=3, images=32)


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    del threads
    import jax
    import numpy as np

    from bench.input import write_folder
    from configs import coco
    from retinanet_jax import settings, sharding
    from retinanet_jax.data import pipeline
    from retinanet_jax.ops import anchors as anchor_lib
    from retinanet_jax.training import state as train_state
    from retinanet_jax.training import step as train_step

    s = settings_for(quick, device)
    with tempfile.TemporaryDirectory() as tmp:
        options = write_folder(Path(tmp), s['images'])
        annotations = Path(options['annotations']['train'])
        data = json.loads(annotations.read_text())
        data['categories'] += [{'id': k, 'name': f'class {k}'} for k in range(4, 81)]
        annotations.write_text(json.dumps(data))

        config = coco.get_config()
        config.data.update(dataset='coco_folder', options=options)
        config.model.update(dtype=s['dtype'], depth=s['depth'])
        config.batch_size = s['batch']
        if s['size'] != 1024:  # the COCO input scaled down to the canvas
            size = s['size']
            config.input.update(image_size=(size, size), short_side=size * 25 // 32, max_side=size)
        cfg = settings.from_config(config)
        mesh = sharding.make_mesh()
        source, _ = settings.make_sources(cfg)
        dataset = pipeline.train_dataset(
            source, cfg.input, sharding.local_batch_size(cfg.batch_size)
        )
        graph, state = train_state.create_state(cfg, mesh)
        anchors = np.asarray(anchor_lib.generate_anchors(cfg.image_hw, cfg.anchors))
        step = train_step.make_train_step(graph, anchors, cfg, mesh)
        workers = cfg.data.workers_for(jax.default_backend())
        how = f'{workers} worker processes' if workers else 'threads'
        what = (
            f'R{s["depth"]}-FPN train step {s["size"]}x{s["size"]} batch {s["batch"]} {s["dtype"]}'
        )

        start = time.perf_counter()
        on_device = sharding.to_global(dataset[0], mesh)
        state, metrics = step(state, on_device)  # compiles
        jax.block_until_ready(metrics['loss'])
        compile_ms = (time.perf_counter() - start) * 1e3

        def steps(n, batches=None):
            """n steps (from `batches`, else the batch on the device); (seconds, waited)."""
            nonlocal state
            waited = 0.0
            start = time.perf_counter()
            for _ in range(n):
                if batches is None:
                    data = on_device
                else:
                    t = time.perf_counter()
                    batch = next(batches)
                    waited += time.perf_counter() - t
                    data = sharding.to_global(batch, mesh)
                state, m = step(state, data)
            jax.block_until_ready(m['loss'])
            return time.perf_counter() - start, waited

        warmup = 2
        steps(warmup)
        seconds, _ = steps(s['runs'])
        synthetic = Timing(
            f'ours: {what}, one batch on the device', seconds / s['runs'] * 1e3,
            seconds / s['runs'] * 1e3, s['runs'], compile_ms,
        )  # fmt: skip
        batches = pipeline.train_iterator(dataset, 1, cfg.data.read_threads, workers)
        try:
            start = time.perf_counter()
            steps(warmup, batches)  # the workers start, their buffers fill
            first_ms = (time.perf_counter() - start) * 1e3
            seconds, waited = steps(s['runs'], batches)
        finally:
            batches.close()
        fed = Timing(
            f'ours: {what}, fed by the pipeline ({how})', seconds / s['runs'] * 1e3,
            seconds / s['runs'] * 1e3, s['runs'], first_ms, reference=synthetic.name,
            extra={'input_wait_share': waited / seconds},
        )  # fmt: skip
    for t in (synthetic, fed):
        print(f'{t.name}: {s["batch"] * 1e3 / t.median_ms:.1f} images/s')
    print(f'fed: the steps waited {waited / seconds:.0%} of the time for their batches')
    return [fed, synthetic]
