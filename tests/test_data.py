"""Input pipeline tests. TensorFlow is imported after torch (tests/conftest.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from retinanet_jax.data import label_maps, pipeline, shapes, sources, transforms
from retinanet_jax.ops.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_VALUE,
    denormalize_images,
    normalize_images,
)
from retinanet_jax.visualize import draw_batch, grid

from .helpers import mock_examples, mock_tfds, require

# ---------------------------------------------------------------- transforms


def rectangle_example(h=60, w=90, box=(10, 20, 40, 50)):
    """A black image with one white rectangle and its box, so boxes can be checked on pixels."""
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return {
        'image': image,
        'image_id': np.int64(7),
        'boxes': np.array([box], np.float32),
        'labels': np.array([2], np.int32),
        'is_crowd': np.array([False]),
    }


def bright_box(image):
    """xyxy extent of the pixels brighter than half scale (the drawn rectangle)."""
    ys, xs = np.nonzero(np.asarray(image)[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def rng(seed=3):
    return np.random.default_rng(seed)


TRANSFORMS = {
    'resize_keep_aspect': lambda e: transforms.resize_keep_aspect(
        transforms.init_sizes(e), 120, 150
    ),
    'shrink_keep_aspect': lambda e: transforms.resize_keep_aspect(transforms.init_sizes(e), 40, 60),
    'resize_square': lambda e: transforms.resize_square(transforms.init_sizes(e), 64),
    'flip': lambda e: transforms.random_horizontal_flip(transforms.init_sizes(e), rng()),
    'vflip': lambda e: transforms.random_vertical_flip(transforms.init_sizes(e), rng(1)),
    'rot90': lambda e: transforms.random_rot90(transforms.init_sizes(e), rng(2)),
    'window': lambda e: transforms.random_window(
        transforms.init_sizes(e), (50, 45), 0.5, 0.0, rng()
    ),
    'jitter_crop': lambda e: transforms.clip_and_filter_boxes(
        transforms.random_crop(
            transforms.random_scale_jitter(transforms.init_sizes(e), 90, 150, 1.2, 1.6, rng()),
            (80, 100),
            rng(4),
        )
    ),
}


@pytest.mark.parametrize('name', sorted(TRANSFORMS))
def test_transforms_boxes_follow_pixels(name):
    out = TRANSFORMS[name](rectangle_example())
    assert out['image'].dtype == np.uint8 and out['boxes'].dtype == np.float32
    np.testing.assert_array_equal(out['content_size'], out['image'].shape[:2])
    # The box still frames the rectangle (bilinear resizing blurs edges by up to a pixel).
    np.testing.assert_allclose(out['boxes'][0], bright_box(out['image']), atol=1.01)


RESIZES = {  # (h, w) -> (new_h, new_w): enlarging, shrinking, one axis each way, COCO -> 1024
    'enlarge': ((48, 64), (77, 103)),
    'shrink': ((90, 120), (37, 49)),
    'mixed': ((40, 120), (64, 64)),
    'coco_1024': ((480, 640), (768, 1024)),
}


@pytest.mark.parametrize('name', sorted(RESIZES))
def test_resize_matches_tensorflow_and_torchvision(name):
    """The kernel against TensorFlow's antialiased bilinear resize (the pipeline's kernel before
    OpenCV / PIL) and torchvision's (a DataLoader user's): within one grey level, as close
    as those two are to each other."""
    torch = require('torch')
    from torchvision.transforms.v2 import functional as tvf

    (h, w), new_hw = RESIZES[name]
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[h // 3 :, : w // 2] = 255  # an edge, where kernels differ most
    ours = transforms.resize_image(image, new_hw).astype(int)
    assert ours.shape == (*new_hw, 3)
    reference = tf.image.resize(image, new_hw, method='bilinear', antialias=True)
    reference = np.round(np.clip(reference.numpy(), 0, 255)).astype(int)
    torchvision = tvf.resize(torch.from_numpy(image).permute(2, 0, 1), list(new_hw), antialias=True)
    torchvision = torchvision.permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - reference).max() <= 1
    assert np.abs(ours - torchvision).max() <= 1
    assert np.abs(ours - reference).mean() < 0.5  # not merely close on average: mostly equal


def test_resize_to_the_same_size_is_the_image():
    image = rectangle_example()['image']
    assert transforms.resize_image(image, image.shape[:2]) is image


def test_flip_golden():
    out = transforms.random_horizontal_flip(rectangle_example(), rng(0))
    flipped = bool(np.asarray(out['image'])[25, 65, 0] > 0)  # rectangle moved to x 50..80
    expected = [50, 20, 80, 50] if flipped else [10, 20, 40, 50]
    np.testing.assert_array_equal(out['boxes'][0], expected)
    if flipped:
        np.testing.assert_array_equal(out['image'], rectangle_example()['image'][:, ::-1])
    flips = [
        float(transforms.random_horizontal_flip(rectangle_example(), rng(i))['boxes'][0, 0])
        for i in range(40)
    ]
    assert 10 < sum(f == 50.0 for f in flips) < 30  # about half

    class Heads:  # a generator whose draw always flips
        def random(self):
            return 0.0

    crop = transforms.random_crop(transforms.init_sizes(rectangle_example()), (40, 50), rng(1))
    out = transforms.random_horizontal_flip(crop, Heads())  # a strided view, flipped
    np.testing.assert_array_equal(out['image'], crop['image'][:, ::-1])
    np.testing.assert_array_equal(crop['boxes'][0], [10 - 38, 20 - 10, 40 - 38, 50 - 10])
    np.testing.assert_array_equal(out['boxes'][0], [50 - 2, 10, 50 + 28, 40])


class Fixed:
    """A generator whose draws are fixed: random() -> 0 (heads), integers(n) -> k."""

    def __init__(self, k=0):
        self.k = k

    def random(self):
        return 0.0

    def integers(self, n):
        return self.k


@pytest.mark.parametrize('k', [0, 1, 2, 3])
def test_vertical_flip_and_rotations_match_torchvision(k):
    """The pixels as numpy's flipud / rot90, the boxes as torchvision v2's vertical_flip and
    rotate(90 k, expand=True) of BoundingBoxes (counter-clockwise)."""
    torch = require('torch')
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as tvf

    image = rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 40, 50], [0, 0, 90, 60], [70.5, 3.25, 88, 9]], np.float32)
    example = transforms.init_sizes({**rectangle_example(), 'image': image, 'boxes': boxes})
    reference = tv_tensors.BoundingBoxes(
        torch.from_numpy(boxes), format='XYXY', canvas_size=(60, 90)
    )
    turned = transforms.random_rot90(example, Fixed(k))
    np.testing.assert_array_equal(turned['image'], np.rot90(image, k))
    np.testing.assert_array_equal(turned['content_size'], np.rot90(image, k).shape[:2])
    want = tvf.rotate(reference, 90.0 * k, expand=True).numpy()
    np.testing.assert_allclose(turned['boxes'], want, atol=1e-4)
    flipped = transforms.random_vertical_flip(example, Fixed())
    np.testing.assert_array_equal(flipped['image'], image[::-1])
    np.testing.assert_allclose(flipped['boxes'], tvf.vertical_flip(reference).numpy(), atol=1e-6)
    assert {int(transforms.random_rot90(example, rng(s))['image'].shape[0]) for s in range(20)} == {
        60,
        90,
    }


def test_color_jitter_matches_torchvision_uint8_kernels():
    """Each of the four, on uint8, against torchvision v2's kernel at the same factor: brightness,
    contrast and saturation equal but for rounding (the float sums' order), hue within 1 grey
    level (OpenCV's float HSV against torchvision's own); the jitter a pure function of its
    generator's seed, boxes untouched."""
    torch = require('torch')
    from torchvision.transforms.v2 import functional as tvf

    image = rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image[:10] = [200, 30, 90]  # a flat colour, where hue and saturation matter
    chw = torch.from_numpy(image).permute(2, 0, 1)
    ops = transforms._COLOR_OPS
    references = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue)
    for op, reference, factors, tol in zip(
        ops,
        references,
        ((0.6, 1.3), (0.7, 1.4), (0.0, 1.8), (-0.3, 0.05)),
        (0, 1, 1, 1),
        strict=True,
    ):
        for f in factors:
            ours = op(image, f).astype(int)
            want = reference(chw, f).permute(1, 2, 0).numpy().astype(int)
            assert np.abs(ours - want).max() <= tol, (reference.__name__, f)
            assert (ours == want).mean() > 0.95, (reference.__name__, f)
    ex = transforms.init_sizes({**rectangle_example(), 'image': image})
    a = transforms.random_color_jitter(ex, (0.3, 0.3, 0.3, 0.05), rng(7))
    b = transforms.random_color_jitter(ex, (0.3, 0.3, 0.3, 0.05), rng(7))
    np.testing.assert_array_equal(a['image'], b['image'])
    assert a['boxes'] is ex['boxes'] and not np.array_equal(a['image'], ex['image'])


def test_resize_keep_aspect_scale_golden():
    out = transforms.resize_keep_aspect(transforms.init_sizes(rectangle_example()), 120, 150)
    # 60x90 -> short side 120 would make 120x180 > 150, so the long side decides: 100x150.
    np.testing.assert_array_equal(out['content_size'], [100, 150])
    np.testing.assert_allclose(out['scale'], [100 / 60, 150 / 90], rtol=1e-6)
    np.testing.assert_allclose(out['boxes'][0], np.array([10, 20, 40, 50]) * 150 / 90, rtol=1e-5)


def test_crop_window_golden():
    example = transforms.init_sizes(rectangle_example())
    out = transforms.random_crop(example, (40, 50), rng(1))
    offset = np.array([0.5118216247002567, 0.9504636963259353]) * np.array([21, 41])
    y, x = offset.astype(int)  # rng(1).random(2), times the room left + 1
    np.testing.assert_array_equal(out['image'], example['image'][y : y + 40, x : x + 50])
    np.testing.assert_array_equal(out['boxes'][0], np.array([10, 20, 40, 50]) - [x, y, x, y])
    np.testing.assert_array_equal(out['content_size'], [40, 50])
    small = transforms.random_crop(example, (100, 100), rng(1))  # larger than the image
    assert small['image'] is not None and small['image'].shape == (60, 90, 3)


def test_clip_filter_and_pad_exact():
    example = rectangle_example()
    example['boxes'] = np.array(
        [[-5, 10, 30, 40], [10, 10, 10.5, 40], [0, 0, 20, 20], [50, 5, 95, 70], [1, 1, 9, 9]],
        np.float32,
    )
    example['labels'] = np.array([0, 1, 2, 3, 4], np.int32)
    example['is_crowd'] = np.array([False, False, True, False, False])
    out = transforms.clip_and_filter_boxes(example)
    np.testing.assert_array_equal(out['labels'], [0, 3, 4])  # thin (1) and crowd (2) dropped
    np.testing.assert_array_equal(out['boxes'], [[0, 10, 30, 40], [50, 5, 90, 60], [1, 1, 9, 9]])
    padded = transforms.pad(
        transforms.clip_and_filter_boxes(transforms.init_sizes(example)), (64, 96), 2
    )
    np.testing.assert_array_equal(padded['gt_labels'], [0, 3])
    assert int(padded['num_boxes_truncated']) == 1
    padded = transforms.pad(transforms.init_sizes(rectangle_example()), (64, 96), 5)
    np.testing.assert_array_equal(padded['gt_labels'], [2, -1, -1, -1, -1])
    np.testing.assert_array_equal(padded['gt_boxes'][1:], 0.0)
    np.testing.assert_array_equal(padded['image'][60:], np.broadcast_to(PAD_VALUE, (4, 96, 3)))
    np.testing.assert_array_equal(padded['image'][:60, :90], rectangle_example()['image'])
    np.testing.assert_array_equal(padded['image'][:60, 90:], np.broadcast_to(PAD_VALUE, (60, 6, 3)))
    assert padded['image'].shape == (64, 96, 3) and padded['image'].dtype == np.uint8
    empty = rectangle_example()
    empty.update(
        boxes=np.zeros([0, 4], np.float32),
        labels=np.zeros([0], np.int32),
        is_crowd=np.zeros(0, bool),
    )
    padded = transforms.pad(
        transforms.clip_and_filter_boxes(transforms.init_sizes(empty)), (64, 96), 3
    )
    np.testing.assert_array_equal(padded['gt_labels'], [-1, -1, -1])
    with pytest.raises(ValueError, match='pad: image 60x90 larger'):
        transforms.pad(transforms.init_sizes(rectangle_example()), (50, 96), 3)


def test_normalize_round_trip_and_padding_is_zero():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    normalised = np.asarray(normalize_images(image))
    np.testing.assert_allclose(
        normalised[0, 0], (image[0, 0] / 255 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-5
    )
    np.testing.assert_array_equal(denormalize_images(normalised), image)
    np.testing.assert_allclose(normalize_images(np.array(PAD_VALUE, np.uint8)), 0, atol=0.01)


# ---------------------------------------------------------------- shapes


def test_shapes_deterministic_and_seeded():
    a = shapes.generate_example(5, seed=1)
    b = shapes.generate_example(5, seed=1)
    c = shapes.generate_example(5, seed=2)
    assert a['image'].tobytes() == b['image'].tobytes()
    np.testing.assert_array_equal(a['boxes'], b['boxes'])
    assert a['image'].tobytes() != c['image'].tobytes()
    assert (
        shapes.generate_example(5, 'validation', seed=1)['image'].tobytes() != a['image'].tobytes()
    )


def test_shapes_boxes_match_drawn_objects():
    for index in range(20):
        e = shapes.generate_example(index, image_size=96, return_masks=True)
        assert len(e['boxes']) == len(e['masks']) >= 1
        for box, mask in zip(e['boxes'], e['masks'], strict=True):
            np.testing.assert_array_equal(box, bright_box(mask[..., None] * 255))
            x1, y1, x2, y2 = box.astype(int)
            assert mask[y1:y2, x1:x2].sum() == mask.sum()  # nothing outside its box
        assert set(e['labels']) <= {0, 1, 2}


def test_shapes_source_pipeline_covers_split_once_per_process():
    src = sources.make_source('shapes', image_size=64, sizes={'validation': 37})
    config = pipeline.InputConfig(image_size=(64, 64), short_side=64, max_side=64)
    seen, counts = [], []
    for p in range(3):
        ds, n = pipeline.eval_dataset(src, config, 8, process_index=p, process_count=3)
        batches = list(pipeline.eval_batches(ds))
        counts.append((n, len(batches)))
        for b in batches:
            seen += list(b['image_id'][b['valid']])
            assert (b['image_id'][~b['valid']] == -1).all()
            assert (b['gt_labels'][~b['valid']] == -1).all()
    assert counts == [(2, 2)] * 3  # shares of 12 / 12 / 13 -> 2 batches of 8 each
    assert sorted(seen) == [10_000_000 + i for i in range(37)]


def test_train_order_and_augmentation_repeat_for_a_seed():
    src = sources.make_source('shapes', image_size=64, sizes={'train': 50})

    def first_batches(seed):
        config = pipeline.InputConfig(
            image_size=(64, 64),
            short_side=64,
            max_side=64,
            scale_jitter=(0.8, 1.25),
            seed=seed,
        )
        it = pipeline.train_iterator(pipeline.train_dataset(src, config, 4))
        return [next(it) for _ in range(3)]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    assert any(not np.array_equal(x['image_id'], z['image_id']) for x, z in zip(a, c, strict=True))


# ---------------------------------------------------------------- tfds COCO and VOC under mock_data


@pytest.mark.parametrize('name', ['coco/2017', 'voc/2007', 'voc/2007+2012'])
def test_tfds_pipelines_under_mock_data(name):
    coco = name.startswith('coco')
    config = pipeline.InputConfig(image_size=(96, 96), short_side=64, max_side=96, max_boxes=8)
    with mock_tfds(coco):
        src = sources.make_source(name)
        batch = pipeline.train_dataset(src, config, 4)[0]
        eval_ds, n = pipeline.eval_dataset(src, config, 4, split='validation')
        eval_batches = list(pipeline.eval_batches(eval_ds))
    assert batch['image'].shape == (4, 96, 96, 3) and batch['gt_boxes'].shape == (4, 8, 4)
    assert src.label_map.num_classes == (80 if coco else 20)
    copies = 2 if name == 'voc/2007+2012' else 1
    assert n == -(-10 * copies // 4) and len(eval_batches) == n
    ids = np.concatenate([b['image_id'][b['valid']] for b in eval_batches])
    expected = [500 + i for i in range(10)] if coco else list(range(10))
    assert sorted(ids) == sorted(expected * copies)
    # Boxes: normalised yxyx -> absolute xyxy of the resized image; crowd / difficult dropped.
    first = next(mock_examples(coco))
    sy, sx = 64 / 50, 90 / 70  # 50x70 -> 64x90: short side 64, long side rounded
    keep = ~(first['objects']['is_crowd'] if coco else first['objects']['is_difficult'])
    y1, x1, y2, x2 = first['objects']['bbox'][keep].T
    want = np.stack([x1 * 70 * sx, y1 * 50 * sy, x2 * 70 * sx, y2 * 50 * sy], 1)
    b0 = eval_batches[0]
    np.testing.assert_allclose(
        b0['gt_boxes'][0][: len(want)], np.minimum(want, [90, 64, 90, 64]), atol=1e-3
    )
    assert (b0['gt_labels'][0][len(want) :] == -1).all()


# ---------------------------------------------------------------- COCO-format folder


def write_coco_folder(tmp_path, *, extra_annotations=(), broken=None):
    """Three PNG images with a white box each; categories with non-contiguous ids 3, 7, 12."""
    (tmp_path / 'images').mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(3):
        image = np.zeros((40, 60, 3), np.uint8)
        image[5 + i : 25 + i, 10:30] = 255
        Image.fromarray(image).save(tmp_path / 'images' / f'im{i}.png')
        images.append({'id': 100 + i, 'file_name': f'im{i}.png', 'height': 40, 'width': 60})
        annotations.append(
            {
                'id': i,
                'image_id': 100 + i,
                'category_id': [3, 7, 12][i],
                'bbox': [10, 5 + i, 20, 20],
                'iscrowd': 0,
            }
        )
    annotations.append(
        {'id': 99, 'image_id': 101, 'category_id': 7, 'bbox': [0, 0, 5, 5], 'iscrowd': 1}
    )
    annotations += list(extra_annotations)
    categories = [
        {'id': 12, 'name': 'twelve'},
        {'id': 3, 'name': 'three'},
        {'id': 7, 'name': 'seven'},
    ]
    (tmp_path / 'ann.json').write_text(
        json.dumps({'images': images, 'annotations': annotations, 'categories': categories})
    )
    if broken == 'missing':
        (tmp_path / 'images' / 'im1.png').unlink()
    if broken == 'corrupt':
        (tmp_path / 'images' / 'im2.png').write_bytes(b'\x89PNG not really')
    return {
        'annotations': {'train': str(tmp_path / 'ann.json')},
        'image_dir': str(tmp_path / 'images'),
    }


def test_coco_folder_loads_with_category_mapping(tmp_path):
    src = sources.make_source('coco_folder', **write_coco_folder(tmp_path))
    assert src.label_map.names == ('three', 'seven', 'twelve')
    assert src.label_map.category_ids == (3, 7, 12)
    config = pipeline.InputConfig(image_size=(64, 64), short_side=40, max_side=60, max_boxes=4)
    ds, n = pipeline.eval_dataset(src, config, 2, split='train')
    batches = [ds[i] for i in range(n)]
    assert n == 2 and sum(int(b['valid'].sum()) for b in batches) == 3
    flat = {
        int(i): (boxes, labels)
        for b in batches
        for i, boxes, labels in zip(b['image_id'], b['gt_boxes'], b['gt_labels'], strict=True)
    }
    for i in range(3):
        boxes, labels = flat[100 + i]
        np.testing.assert_array_equal(labels, [i, -1, -1, -1])  # crowd of image 101 not a target
        np.testing.assert_allclose(boxes[0], [10, 5 + i, 30, 25 + i])
    raw = src.example('train', 1)
    np.testing.assert_array_equal(raw['is_crowd'], [False, True])  # kept aside for evaluation


@pytest.mark.parametrize(
    'kind, message',
    [
        ('missing', r'missing: .*im1\.png'),
        ('corrupt', r'unreadable .*im2\.png'),
        ('unknown_image', r'annotation id 50 points to unknown image id 999'),
        ('negative', r'annotation id 51 has a negative-size box'),
        ('unknown_category', r'annotation id 52: unknown category id 4'),
    ],
)
def test_coco_folder_bad_input_names_the_record(tmp_path, kind, message):
    extra = {
        'unknown_image': [{'id': 50, 'image_id': 999, 'category_id': 3, 'bbox': [0, 0, 5, 5]}],
        'negative': [{'id': 51, 'image_id': 100, 'category_id': 3, 'bbox': [0, 0, -5, 5]}],
        'unknown_category': [{'id': 52, 'image_id': 100, 'category_id': 4, 'bbox': [0, 0, 5, 5]}],
    }.get(kind, [])
    options = write_coco_folder(tmp_path, extra_annotations=extra, broken=kind)
    with pytest.raises(ValueError, match=message):
        sources.make_source('coco_folder', **options)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match=r"unknown dataset 'cocoa'.*shapes"):
        sources.make_source('cocoa')
    with pytest.raises(ValueError, match='unknown category id 12'):
        label_maps.COCO.label_of(12)  # no COCO category 12


def test_label_maps():
    assert label_maps.COCO.num_classes == 80 and label_maps.COCO.category_ids[-1] == 90
    assert label_maps.COCO.label_of(90) == 79 and label_maps.COCO.names[0] == 'person'
    assert label_maps.VOC.num_classes == 20 and label_maps.SHAPES.names == (
        'circle',
        'square',
        'triangle',
    )


def test_draw_batch():
    src = sources.make_source('shapes', image_size=64, sizes={'train': 8})
    config = pipeline.InputConfig(image_size=(64, 64), short_side=64, max_side=64)
    batch = pipeline.train_dataset(src, config, 4)[0]
    picture = np.asarray(grid(draw_batch(batch, src.label_map.names)))
    assert picture.shape == (64, 256, 3)
    plain = np.concatenate(list(batch['image']), axis=1)
    changed = (picture != plain).any(-1)
    assert 0.02 < changed.mean() < 0.6  # outlines and labels drawn, the images still there
    x1, y1, _, _ = batch['gt_boxes'][0, 0].astype(int)
    assert changed[max(y1, 1) - 1 : y1 + 2, max(x1, 1) - 1 : x1 + 2].any()  # on the box corner


def test_coco91_is_torchvision_coco_labels():
    """Label i of a torchvision COCO model is COCO category id i, named as torchvision does."""
    require('torchvision')
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

    names = RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta['categories']
    assert label_maps.COCO91.names == tuple(names)
    assert label_maps.COCO91.category_ids == tuple(range(91))
    for i, cid in enumerate(label_maps.COCO.category_ids):  # the 80 real ones agree with COCO
        assert label_maps.COCO91.names[cid] == label_maps.COCO.names[i]
    assert label_maps.for_num_classes(91) is label_maps.COCO91
    assert label_maps.for_num_classes(5).names == tuple(f'class_{i}' for i in range(5))


def test_tfds_data_that_is_not_there_says_where_and_what_to_do(tmp_path):
    source = sources.make_source('coco/2017', data_dir=str(tmp_path))
    with pytest.raises(ValueError) as info:
        source.num_examples('train')
    message = str(info.value)
    assert '\n' not in message and str(tmp_path) in message and 'not prepared' in message
    assert 'tfds build coco/2017 --file_format=array_record' in message
    assert 'coco_folder' in message and 'instances_train2017.json' in message
