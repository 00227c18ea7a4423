"""Optional test tools, random detection problems and mocked tfds datasets shared by the
tests."""

import contextlib
import importlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

# The README's install line: everything the tests use.
INSTALL = (
    'pip install -r requirements-dev.txt -e . && pip install --no-deps -r requirements-nodeps.txt'
)
# Set by .ci/run: a test that would skip for a missing tool fails instead.
NO_SKIPS = 'RETINANET_JAX_NO_SKIPS'
ROOT = Path(__file__).resolve().parents[1]
# The documentation a reader follows (tests/test_docs.py); history (CHANGELOG.md,
# docs/benchmark-history.md) records what was, not what works.
DOCS = [
    ROOT / 'README.md',
    ROOT / 'CONTRIBUTING.md',
    ROOT / 'BENCHMARKS.md',
    *sorted(p for p in (ROOT / 'docs').glob('*.md') if p.name != 'benchmark-history.md'),
]


def doc_blocks():
    """(file, language, body, first line number, the line before the fence) of every fenced
    code block of DOCS."""
    fence = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)
    for path in DOCS:
        text = path.read_text()
        for match in fence.finditer(text):
            line = text.count('\n', 0, match.start()) + 2
            before = text[: match.start()].rstrip('\n').rsplit('\n', 1)[-1]
            yield path, match.group(1), match.group(2), line, before


def doc_snippet(name: str) -> str:
    """The python snippet of DOCS marked `<!-- snippet: NAME ... -->` (KeyError if none), for
    the test that has the fixture it needs to run it."""
    for _, lang, body, _, before in doc_blocks():
        if lang == 'python' and re.match(rf'<!-- snippet: {name}\b', before):
            return body
    raise KeyError(f'no documented snippet {name!r}')


def require(*modules: str):
    """The modules, imported (the last one is returned); a test (or, at module level, a test
    module) that needs a tool which is not installed skips, naming it and the install line,
    except under RETINANET_JAX_NO_SKIPS=1 (CI), where it fails."""
    for module in modules:
        try:
            imported = importlib.import_module(module)
        except ImportError as error:
            reason = f'needs {module} ({error}); install: {INSTALL}'
            if os.environ.get(NO_SKIPS):
                pytest.fail(f'{NO_SKIPS} is set and a test {reason}', pytrace=False)
            pytest.skip(reason, allow_module_level=True)
    return imported


def random_boxes(rng: np.random.Generator, n: int, image_hw=(128, 160), min_size=8, max_size=96):
    """[n, 4] float32 xyxy boxes of random size, centred inside the image, clipped to it."""
    h, w = image_hw
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    bw, bh = rng.uniform(min_size, max_size, n), rng.uniform(min_size, max_size, n)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    boxes = np.clip(boxes, 0, [w, h, w, h])
    return boxes.astype(np.float32)


def random_problem(rng, num_boxes_per_image, num_anchors, num_classes, max_boxes, image_hw):
    """Head outputs plus padded ground truth for len(num_boxes_per_image) images."""
    b = len(num_boxes_per_image)
    cls_logits = rng.normal(0.0, 2.0, (b, num_anchors, num_classes)).astype(np.float32)
    box_deltas = rng.normal(0.0, 0.5, (b, num_anchors, 4)).astype(np.float32)
    gt_boxes = np.zeros((b, max_boxes, 4), np.float32)
    gt_labels = np.full((b, max_boxes), -1, np.int32)
    for i, n in enumerate(num_boxes_per_image):
        gt_boxes[i, :n] = random_boxes(rng, n, image_hw)
        gt_labels[i, :n] = rng.integers(0, num_classes, n)
    return cls_logits, box_deltas, gt_boxes, gt_labels


def xla_flags(devices: int | None = None) -> str:
    """XLA_FLAGS for a test's subprocess: this session's own flags, with `devices` simulated CPU
    devices (or none forced)."""
    flags = [f for f in os.environ.get('XLA_FLAGS', '').split() if 'device_count' not in f]
    if devices is not None:
        flags.append(f'--xla_force_host_platform_device_count={devices}')
    return ' '.join(flags)


# ------------------------------------------------------------- tfds COCO / VOC under mock_data


def _objects(rng, k, *, coco):
    y1, x1 = rng.uniform(0, 0.5, (2, k))
    bbox = np.stack([y1, x1, y1 + rng.uniform(0.1, 0.5, k), x1 + rng.uniform(0.1, 0.5, k)], 1)
    objects = {'bbox': bbox.astype(np.float32), 'label': rng.integers(0, 20, k).astype(np.int64)}
    if coco:
        objects.update(
            area=np.ones(k, np.int64), id=np.arange(k, dtype=np.int64), is_crowd=np.arange(k) == 1
        )
    else:
        objects.update(
            is_difficult=np.arange(k) == 1,
            is_truncated=np.zeros(k, bool),
            pose=np.zeros(k, np.int64),
        )
    return objects


def mock_examples(coco: bool, n: int = 10):
    """Consistent examples (tfds.testing.mock_data draws every objects/* length separately)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        k = int(rng.integers(0, 5))
        example = {
            'image': rng.integers(0, 255, (50 + 3 * i, 70, 3), dtype=np.uint8),
            'image/filename': f'{i:06d}.jpg',
            'objects': _objects(rng, k, coco=coco),
        }
        if coco:
            example['image/id'] = 500 + i
        else:
            example['labels'] = example['labels_no_difficult'] = example['objects']['label']
        yield example


def _as_data_source_fn(coco, num_examples):
    """tfds' random-access data source, mocked: a list of consistent examples (images PNG-encoded
    where the caller skips decoding, as tfds returns them then)."""

    def fn(builder, *args, decoders=None, **kwargs):
        del builder, args, kwargs
        examples = list(mock_examples(coco, num_examples))
        if decoders is not None:  # SkipDecoding: the encoded image bytes
            import io

            from PIL import Image

            for e in examples:
                buffer = io.BytesIO()
                Image.fromarray(e['image']).save(buffer, format='PNG')
                e['image'] = buffer.getvalue()
        return examples

    return fn


@contextlib.contextmanager
def mock_tfds(coco: bool, num_examples: int = 10):
    """tfds.testing.mock_data with consistent COCO- or VOC-like examples in every split."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(
        num_examples=num_examples, as_data_source_fn=_as_data_source_fn(coco, num_examples)
    ):
        yield


# The score threshold of the tests that predict with the smoke model (a 4-step model's scores
# are low). The threshold is an argument of the compiled predict program (make_predict_step), so
# tests at this threshold and at the run's share a program of one canvas and batch size.
LOW_SCORE = 0.001


# The smoke run trained by windows (config.input.crop_size) of larger images: 64-px windows of
# 96-px shapes images, evaluated by 96-px windows (config.evaluation.tile_size: each image whole,
# at its own scale). As command-line overrides of configs/smoke.py, and as the config they give.
CROP_OVERRIDES = (
    '--config.input.crop_size=(64,64)',
    '--config.data.options.image_size=96',
    '--config.evaluation.tile_size=96',
)


def crop_config():
    from configs import smoke

    config = smoke.get_config()
    config.input.crop_size = (64, 64)
    config.data.options.image_size = 96
    config.evaluation.tile_size = 96
    return config
