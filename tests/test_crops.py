"""Training by windows at the image's own scale (config.input.crop_size; transforms.
random_window): which boxes a window keeps, how often a window is empty, the window as a pure
function of (seed, record, epoch), the training canvas apart from the evaluation canvas, and
a run by crops evaluated by tiles (its SIGKILL resume: tests/test_train.py)."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retinanet_jax.data import pipeline, shapes, transforms
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.errors import UserError

from .helpers import LOW_SCORE


def example_with(boxes, hw=(100, 200), crowd=None):
    """An image whose pixel (y, x) holds (y, x % 256, 0), so a window's offset can be read
    from its first pixel; its boxes (xyxy) labelled 0, 1, ..."""
    h, w = hw
    ys, xs = np.mgrid[:h, :w]
    image = np.stack([ys % 256, xs % 256, np.zeros_like(ys)], -1).astype(np.uint8)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return transforms.init_sizes(
        {
            'image': image,
            'image_id': np.int64(1),
            'boxes': boxes,
            'labels': np.arange(n, dtype=np.int32),
            'is_crowd': np.zeros(n, bool) if crowd is None else np.asarray(crowd),
        }
    )


def offset_of(window) -> tuple[int, int]:
    return int(window['image'][0, 0, 0]), int(window['image'][0, 0, 1])


def test_a_cut_box_is_kept_with_half_its_area_and_clipped_golden():
    """A 40x40 window at (y 10, x 20) (the only offsets that hold box 0 whole, its size; the
    others are crowd regions, never drawn): box 1 has 0.5 of its area inside (kept, clipped),
    box 2 0.4 (dropped), box 3 none."""
    boxes = [[20, 10, 60, 50], [50, 10, 70, 30], [52, 30, 72, 50], [100, 60, 120, 80]]
    crowd = [False, True, True, True]
    out = transforms.random_window(
        example_with(boxes, crowd=crowd), (40, 40), 0.5, 0.0, np.random.default_rng(0)
    )
    assert offset_of(out) == (10, 20) and out['image'].shape == (40, 40, 3)
    np.testing.assert_array_equal(out['labels'], [0, 1])
    np.testing.assert_array_equal(out['boxes'], [[0, 0, 40, 40], [30, 0, 40, 20]])
    np.testing.assert_array_equal(out['content_size'], [40, 40])
    lenient = transforms.random_window(
        example_with(boxes, crowd=crowd), (40, 40), 0.4, 0.0, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(lenient['labels'], [0, 1, 2])


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.integers(0, 190), st.integers(0, 90), st.integers(1, 60), st.integers(1, 60)),
        max_size=6,
    ),
    crop=st.tuples(st.integers(8, 120), st.integers(8, 240)),
    min_visible=st.sampled_from([0.25, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_every_box_kept_or_dropped_by_its_visible_share(boxes, crop, min_visible, seed):
    """Against a brute-force reading of the window: the pixels are the image's at the
    window's offset; a box is kept (clipped, shifted) exactly where min_visible of its area
    lies inside."""
    xyxy = [(x, y, min(x + w, 200), min(y + h, 100)) for x, y, w, h in boxes]
    ex = example_with(xyxy)
    out = transforms.random_window(ex, crop, min_visible, 0.1, np.random.default_rng(seed))
    y, x = offset_of(out)
    h, w = min(crop[0], 100), min(crop[1], 200)
    np.testing.assert_array_equal(out['image'], ex['image'][y : y + h, x : x + w])
    want_boxes, want_labels = [], []
    for label, (x1, y1, x2, y2) in enumerate(xyxy):
        cx1, cy1, cx2, cy2 = max(x1 - x, 0), max(y1 - y, 0), min(x2 - x, w), min(y2 - y, h)
        visible = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
        if visible > 0 and visible >= min_visible * (x2 - x1) * (y2 - y1):
            want_boxes.append([cx1, cy1, cx2, cy2])
            want_labels.append(label)
    np.testing.assert_array_equal(out['labels'], want_labels)
    np.testing.assert_allclose(out['boxes'].reshape(-1, 4), np.reshape(want_boxes, (-1, 4)))


@pytest.mark.parametrize('max_empty', [0.0, 0.1, 1.0])
def test_the_share_of_empty_windows_is_limited(max_empty):
    """One 10-px object in a 400x400 image, 64-px windows: a uniform window holds it ~4 % of
    the time; at most max_empty of the windows are placed regardless of it."""
    ex = example_with([[300, 50, 310, 60]], hw=(400, 400))
    held = [
        len(transforms.random_window(ex, (64, 64), 0.5, max_empty, rng)['labels'])
        for rng in map(np.random.default_rng, range(2000))
    ]
    empty = 1 - np.mean(held)
    assert empty <= max_empty + 0.02, empty
    if max_empty == 1.0:
        assert 0.9 < empty, empty  # uniform: mostly empty
    # an image without objects, or only crowd regions: uniform windows
    for boxes, crowd in (([], None), ([[0, 0, 400, 400]], [True])):
        out = transforms.random_window(
            example_with(boxes, (400, 400), crowd), (64, 64), 0.5, 0.0, np.random.default_rng(1)
        )
        assert out['image'].shape == (64, 64, 3)


def test_an_image_smaller_than_the_window_is_taken_whole_and_padded():
    config = InputConfig(
        image_size=(64, 64), short_side=64, max_side=64, crop_size=(96, 128), flip=False
    )
    ex = shapes.ShapesSource(image_size=64, sizes={'train': 1}).example('train', 0)
    out = pipeline.preprocess(ex, config, train=True, key=5)
    assert out['image'].shape == (96, 128, 3)
    np.testing.assert_array_equal(out['content_size'], [64, 64])
    np.testing.assert_array_equal(out['image'][:64, :64], ex['image'])
    n = len(ex['boxes'])
    np.testing.assert_array_equal(out['gt_boxes'][:n], ex['boxes'])


def test_windows_are_a_pure_function_of_seed_record_and_epoch():
    """Training batches by crops: the canvas is crop_size (evaluation keeps image_size); batch k
    read directly equals batch k of an iterator resumed at k; another seed, other windows."""
    source = shapes.ShapesSource(image_size=96, sizes={'train': 6, 'validation': 2})
    config = InputConfig(image_size=(64, 64), short_side=64, max_side=64, crop_size=(32, 64))
    ds = pipeline.train_dataset(source, config, 2)
    assert ds[0]['image'].shape == (2, 32, 64, 3)
    resumed = pipeline.train_iterator(ds, 4, threads=2)
    for k in (4, 5, 6):  # 6: the next epoch, another permutation and other windows
        batch = next(resumed)
        for key in batch:
            np.testing.assert_array_equal(batch[key], ds[k][key], err_msg=f'{key} of step {k}')
    resumed.close()
    other = pipeline.train_dataset(source, dataclasses.replace(config, seed=1), 2)
    assert not np.array_equal(other[0]['image'], ds[0]['image'])
    evaluated, _ = pipeline.eval_dataset(source, config, 2)
    assert evaluated[0]['image'].shape == (2, 64, 64, 3)


def test_the_data_summary_counts_the_windows_training_draws():
    """show_data's summary and the anchors report under training by crops: the windows that
    summary.train_windows draws are training's own, step for step (their trained boxes and the
    boxes max_boxes cuts, against the pipeline's batches), so the figures are counted over
    windows at the image's scale, not over whole images resized to the evaluation canvas (the
    drops by min_box_size are train_windows' own count, checked to occur)."""
    from retinanet_jax.data import summary

    source = shapes.ShapesSource(image_size=192, sizes={'train': 3})
    config = InputConfig(
        image_size=(64, 64),
        short_side=64,
        max_side=64,
        crop_size=(64, 64),
        crop_scale=(0.8, 1.25),
        flip=False,
        max_boxes=1,
        min_box_size=12.0,
    )
    records = list(source.ground_truth('train'))
    windows = [summary.train_windows(r, i, 3, config) for i, r in enumerate(records)]
    assert [len(w) for w in windows] == [9, 9, 9]  # 192^2 / 64^2 epochs each
    ds = pipeline.train_dataset(source, config, 1)
    cut = dropped = 0
    for step in range(27):  # the first 9 epochs, in training's order
        batch = ds[step]
        index = int(batch['image_id'][0]) - int(records[0]['image_id'])
        boxes, small = windows[index][step // 3]
        n = int((batch['gt_labels'][0] >= 0).sum())
        np.testing.assert_array_equal(batch['gt_boxes'][0, :n], boxes[:1], err_msg=str(step))
        assert batch['num_boxes_truncated'][0] == max(len(boxes) - 1, 0)
        cut, dropped = cut + batch['num_boxes_truncated'][0], dropped + small
    figures = summary.summarize(source, 'train', config, train=True)
    assert figures['windows'] == 27 and figures['cut_by_max_boxes'] == cut > 0
    assert figures['dropped_by_min_size'] == dropped > 0
    assert 'images_over_max_boxes' not in figures and figures['windows_over_max_boxes'] > 0
    evaluated = summary.summarize(source, 'train', config)  # not trained: whole images
    assert 'windows' not in evaluated and evaluated['images'] == 3
    trained = summary.input_boxes(records, config, split_size=3)  # the anchors report's boxes
    assert len(trained) == sum(len(b) for w in windows for b, _ in w)
    assert trained.min() >= 0 and trained.max() <= 64  # inside the training canvas


def test_crop_settings_are_checked_with_one_line():
    from configs import smoke
    from retinanet_jax import settings as settings_lib

    with pytest.raises(UserError, match=r'give crop_size .* or scale_jitter .*, not both'):
        InputConfig(crop_size=(64, 64), scale_jitter=(0.8, 1.2))
    with pytest.raises(UserError, match=r'crop_scale must be \(low, high\)'):
        InputConfig(crop_size=(64, 64), crop_scale=(1.2, 0.8))
    with pytest.raises(UserError, match='crop_min_visible must be in'):
        InputConfig(crop_size=(64, 64), crop_min_visible=0.0)
    config = smoke.get_config()
    config.input.crop_size = (64, 100)
    with pytest.raises(
        UserError, match=r'config.input.crop_size: image size 64x100: .*multiple of 32'
    ):
        settings_lib.from_config(config)
    config.input.crop_size = (64, 96)
    assert settings_lib.from_config(config).input.train_size == (64, 96)


@pytest.mark.slow
def test_a_run_by_crops_evaluates_and_predicts_by_tiles_at_its_own_scale(
    crop_run, tmp_path, capsys
):
    """The smoke model trained by 64-px windows of 96-px images (the crop run), its evaluation
    by 96-px windows (config.evaluation.tile_size): every image whole, at its own scale, with
    no validation loss (no training canvas holds a whole image). Any tile runs at the scale it
    trained at (tiling.window_predictor): a 96-px tile on a 96-px canvas, not shrunk into 64
    px; one such window holding a whole 96-px image gives that image's detections at scale 1.
    The evaluate command reproduces the training's final evaluation by the run's own tiles;
    --tile_size=0 evaluates whole images on the canvas instead, and a tile flag without
    --tile_size is refused; TensorBoard's picture is the first image's detections by tiles."""
    import json

    from retinanet_jax.commands import command, evaluate
    from retinanet_jax.inference import load_predictor, tiling

    workdir, summary = crop_run
    assert summary['step'] == 4 and 'val_loss' not in summary and 'ema/val_loss' not in summary
    predictor = load_predictor(workdir)
    post = dataclasses.replace(predictor.postprocess, score_threshold=LOW_SCORE)
    predictor = dataclasses.replace(predictor, postprocess=post)
    assert tiling.default_tile(predictor.input) == 64 and predictor.image_hw == (64, 64)
    native = tiling.window_predictor(predictor, 96)
    assert native.image_hw == (96, 96) and native.input.short_side == 96
    image = shapes.generate_example(5, 'validation', image_size=96)['image']
    (want,) = native.predict_images([image], 2)  # (batches of 2: the run's tiles' program)
    (got,) = tiling.predict_tiled(predictor, [image], tiling.TileConfig(96, batch=2))
    keep = want['valid']
    assert keep.sum() > 5
    np.testing.assert_array_equal(got['labels'], want['labels'][keep])
    np.testing.assert_allclose(got['boxes'], want['boxes'][keep], atol=1e-4)
    (shrunk,) = predictor.predict_images([image], 2)  # the whole image on the 64-px canvas
    assert shrunk['valid'].sum() != keep.sum() or not np.allclose(
        shrunk['boxes'][shrunk['valid']], want['boxes'][keep], atol=1
    )

    out = tmp_path / 'eval.json'
    assert command.run(evaluate, ['evaluate', f'--model={workdir}', f'--out={out}'], 'x') == 0
    metrics = json.loads(out.read_text())
    assert {'AP', 'AP50', 'P', 'R', 'F1', 'best_F1'} <= set(metrics) and 'val_loss' not in metrics
    for key in ('AP', 'AP50', 'AR100', 'P', 'R', 'F1'):  # the EMA weights, as trained
        assert metrics[key] == pytest.approx(summary[f'ema/{key}'], abs=1e-6), key
    argv = ['evaluate', f'--model={workdir}', '--tile_size=0', '--weights=raw', f'--out={out}']
    assert command.run(evaluate, argv, 'evaluate') == 0
    assert np.isfinite(json.loads(out.read_text())['val_loss'])  # whole images on the canvas
    argv = ['evaluate', f'--model={workdir}', '--tile_overlap=0.3']  # a tile flag alone
    assert command.run(evaluate, argv, 'evaluate') != 0
    assert '--tile_overlap: give --tile_size too' in capsys.readouterr().err

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / 'logs'), size_guidance={'tensors': 0}).Reload()
    picture = events.Tensors('eval/predictions')[-1].tensor_proto
    assert picture.tensor_shape.dim[0].size == 2 + 1  # width, height, one PNG: image 0's corner
