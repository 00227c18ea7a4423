"""Your own data as it comes: the shapes data written as COCO json, Pascal VOC XML, YOLO and CSV
(data/shapes_files.py) reads back as the same examples through every source; each format's bad
input is refused in one line naming the file and the record; a split by fraction is a pure
function of each file's path; a background-only image trains and evaluates."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retinanet_jax.data import file_source, shapes_files, sources
from retinanet_jax.errors import UserError

WRITERS = {
    'coco_folder': shapes_files.write_coco_folder,
    'voc_folder': shapes_files.write_voc_folder,
    'yolo_folder': shapes_files.write_yolo_folder,
    'csv': shapes_files.write_csv,
}


def write(fmt: str, folder: Path, n: int = 12, **kwargs) -> dict:
    return WRITERS[fmt](folder / fmt, n, empty=(3,), not_in_validation=(5,), **kwargs)


def by_file(source, split: str) -> dict:
    """{file stem: example} of a split."""
    out = {}
    for i in range(source.num_examples(split)):
        example = source.example(split, i)
        (stem,) = [
            Path(f).stem.lstrip('0') or '0'
            for f in source.image_files(split, [example['image_id']])
        ]
        out[stem] = example
    return out


def test_every_format_reads_the_same_examples_as_coco(tmp_path):
    reference = sources.make_source('coco_folder', **write('coco_folder', tmp_path))
    expected = {split: by_file(reference, split) for split in ('train', 'validation')}
    assert len(expected['train']) == 12 and len(expected['validation']) == 11
    assert len(expected['train']['3']['boxes']) == 0  # the background-only image
    for fmt in ('voc_folder', 'yolo_folder', 'csv'):
        source = sources.make_source(fmt, **write(fmt, tmp_path))
        assert source.label_map.names == reference.label_map.names
        for split, examples in expected.items():
            got = by_file(source, split)
            assert got.keys() == examples.keys(), (fmt, split)
            for stem, want in examples.items():
                e = got[stem]
                np.testing.assert_array_equal(e['image'], want['image'])
                np.testing.assert_array_equal(e['labels'], want['labels'])
                assert e['boxes'].dtype == want['boxes'].dtype == np.float32
                if fmt == 'yolo_folder':  # normalised coordinates: within 1e-3 px
                    np.testing.assert_allclose(e['boxes'], want['boxes'], atol=1e-3, rtol=0)
                else:  # bitwise
                    np.testing.assert_array_equal(e['boxes'], want['boxes'])
        truth = list(source.ground_truth('validation'))
        assert sum(len(t['boxes']) == 0 for t in truth) == 1
        assert source.background_images('train') == 1


def test_voc_difficult_objects_are_crowds_and_pixel_coordinates_are_a_setting(tmp_path):
    options = write('voc_folder', tmp_path, 6)
    xml = tmp_path / 'voc_folder' / 'Annotations' / '000000.xml'
    text = xml.read_text()
    xml.write_text(text.replace('<difficult>0</difficult>', '<difficult>1</difficult>', 1))
    voc = sources.make_source('voc_folder', **options)
    pixels = sources.make_source('voc_folder', **options, coordinates='pixels')
    first = voc.example('train', 0)
    assert first['is_crowd'].tolist()[0] and not first['is_crowd'][1:].any()
    np.testing.assert_array_equal(
        pixels.example('train', 0)['boxes'][:, :2], first['boxes'][:, :2] + 1
    )
    with pytest.raises(UserError, match='coordinates must be one of'):
        sources.make_source('voc_folder', **options, coordinates='zero')


def test_a_split_by_fraction_follows_each_files_path_only(tmp_path):
    options = write('csv', tmp_path, 20)
    one = tmp_path / 'csv' / 'all.csv'
    rows = (tmp_path / 'csv' / 'train.csv').read_text().splitlines()
    one.write_text('\n'.join(rows) + '\n')
    fractions = {'train': 0.7, 'validation': 0.3}
    source = sources.make_source('csv', files=str(one), split_fractions=fractions)
    train = {Path(f).name for f in source.image_files('train', range(100))}
    validation = {Path(f).name for f in source.image_files('validation', range(100))}
    assert len(train) + len(validation) == 20 and not train & validation
    assert 0 < len(validation) < 20
    # other rows, in another order and with fewer images: each image keeps its split
    fewer = [rows[0], *reversed([r for r in rows[1:] if not r.startswith('images/1')])]
    one.write_text('\n'.join(fewer) + '\n')
    again = sources.make_source('csv', files=str(one), split_fractions=fractions)
    assert {Path(f).name for f in again.image_files('train', range(100))} <= train
    assert {Path(f).name for f in again.image_files('validation', range(100))} <= validation
    for key in ('a/1.png', 'b/2.png'):  # a pure function of the key and the fractions
        assert file_source.split_of(key, fractions) == file_source.split_of(key, fractions)
    with pytest.raises(UserError, match='must sum to 1'):
        sources.make_source('csv', files=str(one), split_fractions={'train': 0.7})
    one.write_text('\n'.join(rows[:2]) + '\n')  # one image cannot fill two splits
    with pytest.raises(UserError, match=r"leave \['\w+'\] without an image \(of 1\)"):
        sources.make_source('csv', files=str(one), split_fractions=fractions)
    del options


def test_images_of_same_named_folders_keep_distinct_ids_and_keys(tmp_path):
    """Flat VOC folders set1/images and set2/images (and CSV files beside them): every image
    its own id and key, so a split by fraction and the evaluator see each once."""
    for k in (1, 2):
        options = write('voc_folder', tmp_path / f'set{k}', 3)
        voc = Path(options['root'])
        flat = tmp_path / f'set{k}' / 'images'
        flat.mkdir()
        for image in (voc / 'JPEGImages').iterdir():
            shutil.copy(image, flat / image.name)
            shutil.copy(voc / 'Annotations' / f'{image.stem}.xml', flat / f'{image.stem}.xml')
    folders = {
        'train': str(tmp_path / 'set1' / 'images'),
        'validation': str(tmp_path / 'set2' / 'images'),
    }
    source = sources.make_source('voc_folder', folders=folders)
    ids = [r['id'] for split in ('train', 'validation') for r in source.split_records(split)]
    keys = [r['key'] for split in ('train', 'validation') for r in source.split_records(split)]
    assert len(set(ids)) == len(ids) == 6 and len(set(keys)) == 6
    assert keys[0] == 'set1/images/000000.png'
    pooled = sources.make_source(
        'voc_folder', folders=folders, split_fractions={'train': 0.8, 'validation': 0.2}
    )
    pooled_ids = [r['id'] for s in ('train', 'validation') for r in pooled.split_records(s)]
    assert sorted(pooled_ids) == sorted(ids)


def test_yolo_yaml_as_ultralytics_reads_it_and_csv_non_finite_values(tmp_path):
    """A split of several folders, Roboflow's '../train/images' resolved as ultralytics does; a
    CSV coordinate 'nan' is named with its row."""
    options = write('yolo_folder', tmp_path, 6)
    root = tmp_path / 'yolo_folder'
    (root / 'data.yaml').write_text(
        'train: [images/train, images/val]\nval: ../images/val\nnames: [circle, square, triangle]\n'
    )
    source = sources.make_source('yolo_folder', **options)
    assert source.num_examples('train') == 6 + 5 and source.num_examples('validation') == 5
    csv_options = write('csv', tmp_path, 3)
    train = Path(csv_options['files']['train'])
    rows = train.read_text().splitlines()
    train.write_text('\n'.join([rows[0], 'images/0.png,1,nan,5,5,circle', *rows[2:]]) + '\n')
    with pytest.raises(UserError, match=r'train.csv: row 2: a coordinate is not finite'):
        sources.make_source('csv', **csv_options)


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count))


def bad_voc(root: Path, kind: str) -> None:
    xml = root / 'Annotations' / '000001.xml'
    if kind == 'malformed':
        edit(xml, '</annotation>', '')
    elif kind == 'outside':
        text = xml.read_text()
        start = text.index('<xmax>') + 6
        xml.write_text(text[:start] + '999' + text[text.index('</xmax>') :])
    elif kind == 'reversed':
        text = xml.read_text()
        start = text.index('<xmin>') + 6
        xml.write_text(text[:start] + '60' + text[text.index('</xmin>') :])
    elif kind == 'size':
        edit(xml, '<height>64</height>', '<height>48</height>')
    elif kind == 'missing image':
        (root / 'JPEGImages' / '000001.png').unlink()


VOC_CASES = {
    'malformed': 'malformed XML',
    'outside': 'reaches outside the 64x64 image',
    'reversed': 'xmin > xmax',
    'size': '<size> says 48x64',
    'missing image': 'is missing',
}


@pytest.mark.parametrize('kind', sorted(VOC_CASES))
def test_voc_bad_input_names_the_file(tmp_path, kind):
    options = write('voc_folder', tmp_path, 4)
    bad_voc(Path(options['root']), kind)
    with pytest.raises(UserError, match=VOC_CASES[kind]) as error:
        sources.make_source('voc_folder', **options)
    assert '000001' in str(error.value) and '\n' not in str(error.value)


def test_unknown_classes_and_class_lists_without_a_used_class_are_named(tmp_path):
    voc = write('voc_folder', tmp_path, 4)
    with pytest.raises(UserError, match=r"000000.xml: object 0 \('\w+'\): class '\w+' is not in"):
        sources.make_source('voc_folder', **voc, classes=['dog'])
    csv_options = write('csv', tmp_path, 4)
    with pytest.raises(UserError, match=r"train.csv: row \d+: label '\w+' is not in the class"):
        sources.make_source('csv', **csv_options, classes=['circle'])
    classes = tmp_path / 'classes.csv'
    classes.write_text('triangle,2\ncircle,0\nsquare,1\n')  # keras-retinanet's name,id rows
    ordered = sources.make_source('csv', **csv_options, classes=str(classes))
    assert ordered.label_map.names == ('circle', 'square', 'triangle')
    yolo = write('yolo_folder', tmp_path, 4)
    label = next((tmp_path / 'yolo_folder' / 'labels' / 'train').glob('*.txt'))
    edit(label, label.read_text().split()[0] + ' ', '7 ')
    with pytest.raises(UserError, match=rf'{label.name}:1: class 7 is not in names \(0..2\)'):
        sources.make_source('yolo_folder', **yolo)


def test_yolo_and_csv_bad_lines_are_named_with_their_line(tmp_path):
    yolo = write('yolo_folder', tmp_path, 4)
    label = sorted((tmp_path / 'yolo_folder' / 'labels' / 'train').glob('*.txt'))[0]
    first = label.read_text().splitlines()[0]
    edit(label, first, ' '.join(first.split()[:4]))  # a line of four numbers
    with pytest.raises(UserError, match=rf'{label.name}:1: 4 values, want 5'):
        sources.make_source('yolo_folder', **yolo)
    edit(label, ' '.join(first.split()[:4]), first.replace(first.split()[1], '1.5', 1))
    with pytest.raises(UserError, match=rf'{label.name}:1: coordinates must be normalised'):
        sources.make_source('yolo_folder', **yolo)
    shutil.rmtree(tmp_path / 'yolo_folder' / 'images' / 'val')
    with pytest.raises(UserError, match=r'image folder .*val does not exist'):
        sources.make_source('yolo_folder', **yolo)
    csv_options = write('csv', tmp_path, 4)
    train = Path(csv_options['files']['train'])
    rows = train.read_text().splitlines()
    train.write_text('\n'.join([rows[0], rows[1].rsplit(',', 1)[0], *rows[2:]]) + '\n')
    with pytest.raises(UserError, match=r'train.csv: row 2: 5 columns, want 6'):
        sources.make_source('csv', **csv_options)
    train.write_text('\n'.join([rows[0], 'images/9.png,1,1,5,5,circle', *rows[2:]]) + '\n')
    with pytest.raises(UserError, match=r'train.csv: row 2: image .*9.png is missing'):
        sources.make_source('csv', **csv_options)
    train.write_text('\n'.join([rows[0], 'images/0.png,1,1,65,5,circle', *rows[2:]]) + '\n')
    with pytest.raises(UserError, match=r'train.csv: row 2: box .* reaches outside the 64x64'):
        sources.make_source('csv', **csv_options)


def test_the_ground_truth_of_every_format_evaluates_like_cocos(tmp_path):
    """The evaluator's ground truth (COCO json of the split) is the same in every format, the
    background-only image included (YOLO's within its rounding)."""
    from retinanet_jax.evaluation import coco_metrics

    def truth(fmt):
        source = sources.make_source(fmt, **write(fmt, tmp_path, 6))
        gt = coco_metrics.make_evaluator(source, 'validation').coco_gt.dataset
        files = source.image_files('validation', [im['id'] for im in gt['images']])
        stems = {
            im['id']: Path(f).stem.lstrip('0') or '0'
            for im, f in zip(gt['images'], files, strict=True)
        }
        return sorted(
            (stems[a['image_id']], a['category_id'], *np.round(a['bbox'], 2))
            for a in gt['annotations']
        ), sorted(stems.values())

    reference = truth('coco_folder')
    for fmt in ('voc_folder', 'yolo_folder', 'csv'):
        boxes, images = truth(fmt)
        assert images == reference[1]
        offset = 1 if fmt == 'yolo_folder' else 0  # YOLO's category ids are its class indices
        assert [(s, c + offset, *b) for s, c, *b in boxes] == reference[0], fmt
    json.dumps(reference)  # plain Python values


CONFIG = """from configs import smoke


def get_config():  # the smoke run's model and input on a {fmt} dataset
    c = smoke.get_config()
    c.data.dataset = '{fmt}'
    c.data.options = {options!r}
    c.checkpoint_every = 4  # one save, at the end
    return c  # the smoke run's 4 steps: its learning-rate schedule, so its compiled step
"""


@pytest.mark.slow
def test_a_short_run_trains_on_each_format(tmp_path, smoke_run, capsys):
    """train.py's command (commands/command.py, in this process) on a config file of each
    format as a user writes one: 4 steps, an evaluation, checkpoints. The smoke run's programs
    (the schedule's length is in the train step): only the data differ."""
    from retinanet_jax.commands import command, train

    for fmt in ('voc_folder', 'yolo_folder', 'csv'):
        config_file = tmp_path / f'{fmt}_config.py'
        config_file.write_text(CONFIG.format(fmt=fmt, options=write(fmt, tmp_path, 8)))
        argv = ['train.py', f'--config={config_file}', f'--workdir={tmp_path / fmt / "run"}']
        assert command.run(train, argv, 'train.py') == 0, fmt
        out = capsys.readouterr().out
        assert f'training data: {fmt} train, 8 images, 1 of them background only' in out
        summary = json.loads((tmp_path / fmt / 'run' / 'metrics.json').read_text())
        assert summary['step'] == 4 and np.isfinite(summary['val_loss']), fmt
