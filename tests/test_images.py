"""Image files as photo folders hold them: each kind decodes to the right RGB, or is refused by
name; the coco_folder source and its annotation files, at their edges."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from retinanet_jax.data import images, pipeline, sources


def test_every_pixel_format_decodes_to_rgb(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(gray, 'L').save(tmp_path / 'gray.png')
    np.testing.assert_array_equal(
        images.read_image(tmp_path / 'gray.png'), np.repeat(gray[..., None], 3, -1)
    )

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0  # fully transparent
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
    np.testing.assert_array_equal(
        images.read_image(tmp_path / 'rgba.png'), np.broadcast_to([10, 20, 30], (2, 2, 3))
    )

    palette = Image.new('P', (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info['transparency'] = 0
    palette.save(tmp_path / 'palette.png')
    np.testing.assert_array_equal(
        images.read_image(tmp_path / 'palette.png'), [[[255, 0, 0], [0, 0, 255]]]
    )

    sixteen = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(sixteen).save(tmp_path / 'sixteen.png')
    assert Image.open(tmp_path / 'sixteen.png').mode.startswith('I')
    np.testing.assert_array_equal(
        images.read_image(tmp_path / 'sixteen.png')[..., 0], [[0, 1, 128, 255]]
    )  # scaled, not clipped at 255

    Image.new('CMYK', (8, 8), (0, 255, 255, 0)).save(tmp_path / 'cmyk.jpg', quality=100)
    assert Image.open(tmp_path / 'cmyk.jpg').mode == 'CMYK'
    red = images.read_image(tmp_path / 'cmyk.jpg')
    np.testing.assert_allclose(red.reshape(-1, 3).mean(0), [255, 0, 0], atol=3)


def exif_photo(path, orientation=6):
    """10 x 20 stored pixels, left half red, right half blue, EXIF orientation 6 (a viewer
    turns it 90 degrees clockwise: 20 x 10, red on top)."""
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10, 0] = 255
    pixels[:, 10:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=100, exif=exif.tobytes())


def test_exif_orientation_is_an_option(tmp_path):
    exif_photo(tmp_path / 'photo.jpg')
    stored = images.read_image(tmp_path / 'photo.jpg')  # the default: as stored, as COCO
    assert stored.shape == (10, 20, 3) and stored[5, 2, 0] > 200 and stored[5, 17, 2] > 200
    upright = images.read_image(tmp_path / 'photo.jpg', exif='apply')
    assert upright.shape == (20, 10, 3)
    assert upright[2, 5, 0] > 200 and upright[17, 5, 2] > 200  # red on top, blue below
    assert images.image_size(tmp_path / 'photo.jpg') == (10, 20)
    assert images.image_size(tmp_path / 'photo.jpg', exif='apply') == (20, 10)
    with pytest.raises(ValueError, match='exif must be one of'):
        images.read_image(tmp_path / 'photo.jpg', exif='rotate')


def test_zero_byte_and_truncated_files_are_refused_by_name(tmp_path):
    (tmp_path / 'empty.jpg').write_bytes(b'')
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / 'whole.jpg')
    data = (tmp_path / 'whole.jpg').read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(data[: len(data) // 2])
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / 'whole.png')
    data = (tmp_path / 'whole.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[: len(data) // 2])
    for name in ('empty.jpg', 'cut.jpg', 'cut.png'):
        with pytest.raises(ValueError, match=rf'{name}: not a readable image'):
            images.read_image(tmp_path / name)
    assert images.verify_image(tmp_path / 'empty.jpg') is not None
    assert images.verify_image(tmp_path / 'whole.jpg') is None


# ---------------------------------------------------------------- coco_folder at its edges


def folder(tmp_path, images_=None, annotations=None, categories=None, files=None):
    """A COCO folder: two 40x60 PNGs unless `files` writes others; returns make_source options."""
    (tmp_path / 'images').mkdir(parents=True, exist_ok=True)
    for name in files or ('a.png', 'b.png'):
        Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / 'images' / name)
    data = {
        'images': images_
        if images_ is not None
        else [
            {'id': 1, 'file_name': 'a.png', 'height': 40, 'width': 60},
            {'id': 2, 'file_name': 'b.png', 'height': 40, 'width': 60},
        ],
        'annotations': annotations
        if annotations is not None
        else [
            {'id': 10, 'image_id': 1, 'category_id': 5, 'bbox': [1, 2, 10, 10]},
        ],
        'categories': categories if categories is not None else [{'id': 5, 'name': 'five'}],
    }
    data = {k: v for k, v in data.items() if v != 'absent'}
    (tmp_path / 'ann.json').write_text(json.dumps(data))
    return {
        'annotations': {'train': str(tmp_path / 'ann.json')},
        'image_dir': str(tmp_path / 'images'),
    }


@pytest.mark.parametrize(
    'kind, change, message',
    [
        ('no images', dict(images_='absent'), r"ann.json: not a COCO annotation file .*'images'"),
        ('no categories', dict(categories='absent'), r"no 'categories' list"),
        ('duplicate image id', dict(images_=[{'id': 1, 'file_name': 'a.png'},
                                             {'id': 1, 'file_name': 'b.png'}]),
         'duplicate image id 1'),
        ('duplicate category id', dict(categories=[{'id': 5, 'name': 'a'}, {'id': 5, 'name': 'b'}]),
         r'duplicate category ids \[5\]'),
        ('outside', dict(annotations=[{'id': 11, 'image_id': 1, 'category_id': 5,
                                       'bbox': [70, 5, 10, 10]}]),
         r'annotation id 11: box \[70, 5, 10, 10\] lies entirely outside its 40x60 image'),
        ('negative', dict(annotations=[{'id': 12, 'image_id': 1, 'category_id': 5,
                                        'bbox': [1, 2, -3, 4]}]),
         'annotation id 12 has a negative-size box'),
        ('malformed', dict(annotations=[{'id': 13, 'image_id': 1, 'category_id': 5,
                                         'bbox': [1, 2, 'x', 4]}]),
         'annotation id 13 has a malformed bbox'),
        ('unknown category', dict(annotations=[{'id': 14, 'image_id': 2, 'category_id': 6,
                                                'bbox': [1, 2, 3, 4]}]),
         'annotation id 14: unknown category id 6'),
    ],
)  # fmt: skip
def test_bad_annotation_files_name_the_record(tmp_path, kind, change, message):
    del kind
    with pytest.raises(ValueError, match=message):
        sources.make_source('coco_folder', **folder(tmp_path, **change))


def test_coco_conventions_at_the_edges(tmp_path, caplog):
    annotations = [
        {'id': 20, 'image_id': 1, 'category_id': 9, 'bbox': [50, 30, 20, 20]},  # partly outside
        {'id': 21, 'image_id': 1, 'category_id': 5, 'bbox': [5, 5, 0, 8]},  # zero width
        {'id': 22, 'image_id': 2, 'category_id': 5, 'bbox': [0, 0, 30, 30], 'iscrowd': 1},
    ]
    categories = [{'id': 9, 'name': 'nine'}, {'id': 5, 'name': 'five'}]  # ids with gaps
    with caplog.at_level(logging.WARNING):
        source = sources.make_source(
            'coco_folder', **folder(tmp_path, annotations=annotations, categories=categories)
        )
    assert (
        'zero-size box(es), kept for evaluation, not trained on: annotation ids [21]' in caplog.text
    )
    assert source.label_map.names == ('five', 'nine') and source.label_map.category_ids == (5, 9)
    truth = list(source.ground_truth('train'))  # all three kept for evaluation, from the json
    assert [len(t['labels']) for t in truth] == [2, 1] and truth[1]['is_crowd'].tolist() == [True]
    config = pipeline.InputConfig(image_size=(64, 64), short_side=40, max_side=60, max_boxes=4)
    ds, _ = pipeline.eval_dataset(source, config, 2, split='train')
    batch = ds[0]
    # image 1: the partly outside box clipped to the image; the zero-width one not a target;
    # image 2: the crowd region not a target.
    np.testing.assert_allclose(batch['gt_boxes'][0, 0], [50, 30, 60, 40])
    np.testing.assert_array_equal(batch['gt_labels'], [[1, -1, -1, -1], [-1, -1, -1, -1]])
    no_objects = folder(tmp_path / 'info', annotations='absent')  # an image-info file
    assert [
        len(t['labels'])
        for t in sources.make_source('coco_folder', **no_objects).ground_truth('train')
    ] == [0, 0]


def test_photo_folders_with_every_file_kind(tmp_path, caplog):
    (tmp_path / 'images').mkdir()
    exif_photo(tmp_path / 'images' / 'turned.jpg')
    Image.fromarray(np.array([[0, 65535]], np.uint16).repeat(10, 0).repeat(10, 1)).save(
        tmp_path / 'images' / 'deep.png'
    )
    (tmp_path / 'images' / 'empty.jpg').write_bytes(b'')
    entries = [
        {'id': 1, 'file_name': 'turned.jpg', 'height': 20, 'width': 10},  # annotated upright
        {'id': 2, 'file_name': 'deep.png', 'height': 10, 'width': 20},
        {'id': 3, 'file_name': 'empty.jpg'},
    ]
    options = folder(tmp_path, images_=entries, annotations=[], files=())
    with pytest.raises(ValueError, match=r'1 unreadable image file\(s\): .*empty\.jpg'):
        sources.make_source('coco_folder', **options)
    with caplog.at_level(logging.WARNING):
        source = sources.make_source('coco_folder', **options, skip_bad_images=True, exif='apply')
    assert 'empty.jpg' in caplog.text and source.num_examples('train') == 2  # said, not silent
    turned = source.example('train', 0)['image']
    assert turned.shape == (20, 10, 3) and turned[2, 5, 0] > 200
    deep = source.example('train', 1)['image']
    assert deep[0, 0].tolist() == [0, 0, 0] and deep[0, 15].tolist() == [255, 255, 255]
    stored = sources.make_source('coco_folder', **options, skip_bad_images=True)  # exif ignored
    with pytest.raises(
        ValueError,
        match=r'turned.jpg: decodes to 10x20 but its annotations say '
        r'20x10 \(EXIF rotation\? see the exif option\)',
    ):
        stored.example('train', 0)
