"""The training order: a pure function of record indices, resumable without reading the past."""

import threading

import numpy as np
import pytest

from retinanet_jax.data import input_position, pipeline, shapes
from retinanet_jax.data.source import Source

CONFIG = pipeline.InputConfig(
    image_size=(32, 32), short_side=32, max_side=32, scale_jitter=(0.8, 1.25), max_boxes=4
)


class CountingSource(Source):
    """shapes, counting every example it decodes (from any of grain's threads)."""

    def __init__(self, n: int):
        self.inner = shapes.ShapesSource(image_size=32, sizes={'train': n})
        self.label_map, self.name = self.inner.label_map, 'counting'
        self.decoded, self._lock = [], threading.Lock()

    def num_examples(self, split):
        return self.inner.num_examples(split)

    def example(self, split, index):
        with self._lock:
            self.decoded.append(index)
        return self.inner.example(split, index)


def record_of(image_id) -> int:
    return int(image_id) % 10_000_000  # shapes train ids are the record index


def test_resume_at_step_1000_reads_nothing_before_and_continues_exactly():
    straight_source = CountingSource(2100)
    straight = pipeline.train_iterator(pipeline.train_dataset(straight_source, CONFIG, 2))
    batches = [next(straight) for _ in range(1003)]
    before = {record_of(i) for b in batches[:1000] for i in b['image_id']}
    assert len(before) == 2000  # step 1000 is still in the first epoch of 2100 records

    resumed_source = CountingSource(2100)
    resumed = pipeline.train_iterator(pipeline.train_dataset(resumed_source, CONFIG, 2), 1000)
    again = [next(resumed) for _ in range(3)]
    assert resumed_source.decoded, 'the resumed iterator read nothing'
    assert not before & set(resumed_source.decoded)  # nothing scheduled before step 1000
    assert len(resumed_source.decoded) < 40  # only what steps >= 1000 need, plus prefetch
    assert resumed.get_state() == {'next_index': 1003}
    for want, got in zip(batches[1000:], again, strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # Random access gives the same batch: the order is a function of the index alone.
    np.testing.assert_array_equal(
        pipeline.train_dataset(resumed_source, CONFIG, 2)[1001]['image'], batches[1001]['image']
    )


@pytest.mark.parametrize('n', [10, 11])
def test_each_epoch_is_a_new_permutation_shared_by_the_processes(n):
    source = shapes.ShapesSource(image_size=32, sizes={'train': n})
    per_process = n // 2
    epochs = {0: [], 1: []}
    for p in range(2):
        ds = pipeline.train_dataset(source, CONFIG, 1, process_index=p, process_count=2)
        ids = [record_of(ds[k]['image_id'][0]) for k in range(2 * per_process)]
        epochs[0].append(ids[:per_process])
        epochs[1].append(ids[per_process:])
    for e in (0, 1):
        seen = epochs[e][0] + epochs[e][1]
        assert len(set(seen)) == len(seen) == 2 * per_process  # every example once per epoch
        assert set(seen) <= set(range(n))
        assert not set(epochs[e][0]) & set(epochs[e][1])  # the processes' shares are disjoint
    assert epochs[0] != epochs[1]  # the second epoch is another order


def test_augmentation_depends_on_record_and_epoch_not_on_the_process_layout():
    source = shapes.ShapesSource(image_size=32, sizes={'train': 8})
    one = pipeline.train_dataset(source, CONFIG, 1)
    two = [
        pipeline.train_dataset(source, CONFIG, 1, process_index=p, process_count=2)
        for p in range(2)
    ]
    by_record = {}
    for k in range(8):  # the first epoch of the one-process order
        b = one[k]
        by_record[record_of(b['image_id'][0])] = b['gt_boxes'][0]
    for ds in two:
        for k in range(4):
            b = ds[k]
            np.testing.assert_array_equal(b['gt_boxes'][0], by_record[record_of(b['image_id'][0])])


def test_positions_are_checked_against_the_order():
    source = shapes.ShapesSource(image_size=32, sizes={'train': 20})
    order = input_position.order_of(source, CONFIG, 4, split='train', process_count=1)
    input_position.check_position({'next_index': 7, 'order': order}, order, 7, 'ckpt')  # fine
    changed = {**order, 'num_examples': 30, 'seed': 1}
    with pytest.raises(
        ValueError,
        match=r'ckpt: .*order has changed .*num_examples 20 -> 30.*'
        r'seed 0 -> 1',
    ):
        input_position.check_position({'next_index': 7, 'order': order}, changed, 7, 'ckpt')
    with pytest.raises(ValueError, match='batch_size_per_process 4 -> 8'):
        input_position.check_position(
            {'next_index': 7, 'order': order}, {**order, 'batch_size_per_process': 8}, 7, 'ckpt'
        )
    for corrupt in ({'next_index': 'x', 'order': order}, {'order': order}, [], 'garbage'):
        with pytest.raises(ValueError, match='ckpt: the input position is corrupt'):
            input_position.check_position(corrupt, order, 7, 'ckpt')
    with pytest.raises(ValueError, match='does not match checkpoint step 8'):
        input_position.check_position({'next_index': 7, 'order': order}, order, 8, 'ckpt')
    with pytest.raises(ValueError, match='has no input position'):
        input_position.check_position(None, order, 7, 'ckpt')


@pytest.mark.multiprocess
def test_worker_processes_give_the_same_batches_from_any_step_and_name_a_bad_file(tmp_path):
    """config.data.read_workers: two spawned grain workers give batch k at step k, as the
    threads do, from a resumed step on; a file that goes bad mid-run stops it naming the file,
    and closing the iterator stops the workers."""
    from PIL import Image

    from retinanet_jax.data import sources

    folder = tmp_path / 'images'
    folder.mkdir()
    images, annotations = [], []
    for i in range(12):
        e = shapes.generate_example(i, image_size=48)
        Image.fromarray(e['image']).save(folder / f'{i}.jpg', quality=90)
        images.append({'id': i, 'file_name': f'{i}.jpg', 'height': 48, 'width': 48})
        x1, y1, x2, y2 = (float(v) for v in e['boxes'][0])
        annotations.append(
            {'id': i, 'image_id': i, 'category_id': 1, 'bbox': [x1, y1, x2 - x1, y2 - y1]}
        )
    categories = [{'id': 1, 'name': 'shape'}]
    (tmp_path / 'train.json').write_text(
        __import__('json').dumps(
            {'images': images, 'annotations': annotations, 'categories': categories}
        )
    )
    source = sources.make_source(
        'coco_folder', annotations={'train': str(tmp_path / 'train.json')}, image_dir=str(folder)
    )
    dataset = pipeline.train_dataset(source, CONFIG, 2)
    workers = pipeline.train_iterator(dataset, 7, workers=2)
    try:
        for step in range(7, 13):  # past the end of the first epoch (6 batches)
            want, got = dataset[step], next(workers)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f'{step} {key}')
    finally:
        workers.close()

    (folder / '5.jpg').write_bytes(b'not a jpeg any more')
    workers = pipeline.train_iterator(dataset, 0, workers=1)
    try:
        with pytest.raises(ValueError, match=r'images/5\.jpg: not a readable image'):
            for _ in range(12):
                next(workers)
    finally:
        workers.close()
