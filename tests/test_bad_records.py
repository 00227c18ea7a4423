"""A training record that goes bad mid-run: stop naming it (default), or replace it
deterministically, list it and stop past a fraction (data.on_bad_record='skip')."""

import json

import numpy as np
import pytest

from retinanet_jax.data import pipeline, shapes_files, sources
from retinanet_jax.data.bad_records import BadRecords, TooManyBadRecords

CONFIG = pipeline.InputConfig(image_size=(64, 64), short_side=64, max_side=64, max_boxes=8)


def write_shapes_folder(folder, n=8):
    """n shapes images as a COCO folder; image 5 is left out of the validation split."""
    options = shapes_files.write_coco_folder(folder, n, not_in_validation=(5,))
    return {**options, 'annotations': {'train': options['annotations']['train']}}


def epoch_ids(dataset, steps):
    return [int(i) for k in range(steps) for i in dataset[k]['image_id']]


def test_a_record_gone_bad_stops_by_default_naming_its_file(tmp_path):
    source = sources.make_source('coco_folder', **write_shapes_folder(tmp_path))
    (tmp_path / 'images' / '3.png').write_bytes(b'\x89PNG garbage after the run began')
    ds = pipeline.train_dataset(source, CONFIG, 2)
    with pytest.raises(ValueError, match=r'3\.png'):
        epoch_ids(ds, 4)


def test_coco_folder_names_the_files_of_a_batch_for_messages(tmp_path):
    source = sources.make_source('coco_folder', **write_shapes_folder(tmp_path))
    assert source.image_files('train', [3, 0]) == [
        str(tmp_path / 'images' / '3.png'),
        str(tmp_path / 'images' / '0.png'),
    ]
    assert sources.make_source('shapes').image_files('train', [3]) == []  # no files


def test_skip_replaces_it_with_the_next_record_every_time_and_lists_it(tmp_path, capsys):
    source = sources.make_source('coco_folder', **write_shapes_folder(tmp_path))
    straight = epoch_ids(pipeline.train_dataset(source, CONFIG, 2), 8)  # two epochs
    (tmp_path / 'images' / '3.png').write_bytes(b'')
    bad = BadRecords(max_fraction=0.2)
    ds = pipeline.train_dataset(source, CONFIG, 2, bad_records=bad)
    replaced = [4 if i == 3 else i for i in straight]  # record 3 -> record 4, both epochs
    assert epoch_ids(ds, 8) == replaced
    assert epoch_ids(ds, 8) == replaced  # a pure function of the index: resume stays exact
    first = ds[2]['image']  # step 2 read again, alone, as a resumed iterator would
    np.testing.assert_array_equal(
        first, pipeline.train_dataset(source, CONFIG, 2, bad_records=bad)[2]['image']
    )
    [entry] = bad.entries()
    assert entry['index'] == 3 and entry['split'] == 'train' and '3.png' in entry['reason']
    assert capsys.readouterr().err.count('bad record replaced') == 1  # logged once


def test_skip_stops_past_the_fraction(tmp_path):
    source = sources.make_source('coco_folder', **write_shapes_folder(tmp_path))
    for i in (2, 5):
        (tmp_path / 'images' / f'{i}.png').write_bytes(b'')
    ds = pipeline.train_dataset(source, CONFIG, 2, bad_records=BadRecords(max_fraction=0.25))
    epoch_ids(ds, 4)  # 2 of 8 bad: within 25 %
    ds = pipeline.train_dataset(source, CONFIG, 2, bad_records=BadRecords(max_fraction=0.2))
    with pytest.raises(
        TooManyBadRecords,
        match=r"2 of 8 records of split 'train' are bad, more than "
        r'config\.data\.max_bad_fraction=0\.2; the last: .*png',
    ):
        epoch_ids(ds, 4)


@pytest.mark.slow
def test_a_run_with_skip_goes_on_and_lists_the_record_in_its_folder(tmp_path, smoke_run):
    """(After the shared smoke run: the same model and batch shapes, so its compiled programs.)"""
    from configs import smoke
    from retinanet_jax.training import trainer

    options = shapes_files.write_coco_folder(tmp_path / 'data', 8, not_in_validation=(5,))
    config = smoke.get_config()
    config.data.update(dataset='coco_folder', on_bad_record='skip', max_bad_fraction=0.2)
    config.data.options = {**options, 'verify_images': False}  # it goes bad after the start
    (tmp_path / 'data' / 'images' / '5.png').write_bytes(b'')
    summary = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
    assert summary['step'] == 4  # 8 records read: the whole epoch, record 5 replaced
    [entry] = json.loads((tmp_path / 'run' / 'bad_records.json').read_text())
    assert entry['index'] == 5 and '5.png' in entry['reason']
