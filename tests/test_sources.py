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
    del options


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
    c.update(train_steps=2, eval_every=2, checkpoint_every=2)
    return c
"""


@pytest.mark.slow
def test_a_short_run_trains_on_each_format(tmp_path, smoke_run):
    """train.py on a VOC folder (a config file as a user writes one); YOLO and CSV through the
    same train_and_evaluate in this process. The smoke run's programs: only the data differ."""
    import subprocess
    import sys

    from configs import smoke
    from retinanet_jax.training import trainer

    root = Path(__file__).resolve().parents[1]
    config_file = tmp_path / 'voc_config.py'
    options = write('voc_folder', tmp_path, 8)
    config_file.write_text(CONFIG.format(fmt='voc_folder', options=options))
    proc = subprocess.run(
        [sys.executable, 'train.py', f'--config={config_file}', f'--workdir={tmp_path / "voc"}'],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'training data: voc_folder train, 8 images, 1 of them background only' in proc.stdout
    assert json.loads((tmp_path / 'voc' / 'metrics.json').read_text())['step'] == 2
    for fmt in ('yolo_folder', 'csv'):
        config = smoke.get_config()
        config.data.dataset = fmt
        config.data.options = write(fmt, tmp_path, 8)
        config.update(train_steps=2, eval_every=2, checkpoint_every=2)
        summary = trainer.train_and_evaluate(config, str(tmp_path / fmt / 'run'))
        assert summary['step'] == 2 and np.isfinite(summary['val_loss']), fmt


def test_show_data_draws_the_fed_examples_and_counts_what_training_drops(tmp_path, capsys):
    """show_data on a hand-made CSV: 3 images, one background only, one with 10 boxes (max_boxes
    8 cuts 2), one box under input.min_box_size; pictures of the fed batch and the figures."""
    from PIL import Image

    from configs import smoke
    from retinanet_jax.commands import command, show_data

    folder = tmp_path / 'data'
    (folder / 'images').mkdir(parents=True)
    for name in ('a', 'b', 'c'):
        Image.new('RGB', (64, 48), (40, 90, 160)).save(folder / 'images' / f'{name}.png')
    rows = ['image_path,xmin,ymin,xmax,ymax,label', 'images/a.png,,,,,']
    rows += [f'images/b.png,{4 * k},{2 * k},{4 * k + 6},{2 * k + 9},dot' for k in range(10)]
    rows += ['images/c.png,10,10,10.5,30,line', 'images/c.png,5,5,40,40,dot']
    (folder / 'train.csv').write_text('\n'.join(rows) + '\n')
    config = smoke.get_config()
    config.data.dataset = 'csv'
    config.data.options = {'files': {'train': str(folder / 'train.csv')}}
    config.model.num_classes = 2
    figures = show_data.show_data(config, tmp_path / 'out', num_images=3)
    assert figures['images'] == 3 and figures['boxes'] == 12
    assert figures['background_images'] == 1 and figures['boxes_per_image']['max'] == 10
    assert figures['dropped_by_min_size'] == 1  # 0.5 px wide at the input scale (64 / 64)
    assert (figures['cut_by_max_boxes'], figures['images_over_max_boxes']) == (2, 1)
    assert json.loads((tmp_path / 'out' / 'summary.json').read_text()) == figures
    assert len(list((tmp_path / 'out' / 'examples').glob('*.png'))) == 3
    sizes = np.asarray(Image.open(tmp_path / 'out' / 'sizes.png'))
    assert sizes.ndim == 3 and sizes.std() > 10  # a drawn histogram, not a blank picture
    drawn = [np.asarray(Image.open(p)) for p in sorted((tmp_path / 'out' / 'examples').iterdir())]
    assert all(d.shape == (64, 64, 3) for d in drawn)  # on the canvas, as fed
    colours = sorted(len(np.unique(d.reshape(-1, 3), axis=0)) for d in drawn)
    assert colours[0] == 2 and colours[-1] > 3  # the background image (image + padding) as is
    # the command itself: --config and its overrides, one line for bad input
    argv = ['show_data', '--config=configs/smoke.py', f'--out={tmp_path / "smoke"}']
    assert command.run(show_data, [*argv, '--num_images=2', '--max_images=8'], 'show_data') == 0
    assert 'background_images: 0' in capsys.readouterr().out
    assert command.run(show_data, [*argv, '--num_images=0'], 'show_data') == 1
    assert 'show_data: num_images must be >= 1' in capsys.readouterr().err
