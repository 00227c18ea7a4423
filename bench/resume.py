"""What a restart costs the input: time to the first batch when resuming at a late step.

python -m bench resume      (the shapes demo's input, resuming at step 50,000)

ours        pipeline.train_iterator(train_dataset(...), 50_000): the order is a function of
            the record index, so the iterator starts at step 50,000 and decodes only what
            that step needs (plus its prefetch)
replay      what resuming cost before (tf.data `skip(start_step)` after decode, augmentation
            and batching): every batch up to the step produced and thrown away. Measured over
            the first `replayed` steps and scaled linearly to 50,000 (each step costs the same)
"""

import time

from bench.timing import Timing

STEP = 50_000


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    del threads, device
    from configs import shapes
    from retinanet_jax import settings
    from retinanet_jax.data import pipeline

    s = settings.from_config(shapes.get_config())
    source, _ = settings.make_sources(s)
    dataset = pipeline.train_dataset(source, s.input, s.batch_size)
    step = 500 if quick else STEP
    start = time.perf_counter()
    next(pipeline.train_iterator(dataset, step))
    resumed = time.perf_counter() - start

    replayed = 5 if quick else 200
    iterator = pipeline.train_iterator(dataset)
    start = time.perf_counter()
    for _ in range(replayed):
        next(iterator)
    per_step = (time.perf_counter() - start) / replayed
    replay = per_step * step
    print(
        f'resume at step {step}: {resumed * 1e3:.0f} ms to the first batch; replaying the '
        f'input: {per_step * 1e3:.1f} ms per step x {step} = {replay / 60:.1f} min'
    )
    ours = Timing(
        f'ours: first batch at step {step} (index-level order)',
        resumed * 1e3,
        resumed * 1e3,
        1,
        0.0,
        reference=f'replay: {step} steps of input',
    )
    before = Timing(f'replay: {step} steps of input', replay * 1e3, replay * 1e3, replayed, 0.0)
    return [ours, before]
