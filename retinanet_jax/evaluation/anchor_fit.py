"""How well a config's anchors cover its data, and anchors that cover it better (what
`python -m retinanet_jax anchors` prints).

Boxes: float [N, 4] xyxy in network-input pixels (data.summary.input_boxes: a split's non-crowd
ground truth, resized as evaluation resizes it; training's scale jitter moves sizes within its range
and is not sampled; training by crops: the boxes of windows drawn as training draws them, on the
crop canvas). Anchors: anchors.generate_anchors(image_hw, AnchorConfig), every level.

best_iou(boxes, image_hw, config) -> [N]: each box's best IoU with any anchor, exact and in
    O(N x levels x anchors per location): for an anchor shape, IoU falls with the distance
    between centres along each axis, so the grid centre nearest the box's (clipped to the
    grid) is the best of its shape; anchors.generate_anchors' brute force agrees (tests).
coverage(boxes, best, matcher) -> rows per size range (sqrt of area, input pixels): the
    boxes, the share whose best anchor reaches the positive threshold (a positive in its own
    right) and the negative threshold, the mean best IoU; and the boxes below the positive
    threshold, which only low-quality matching gives an anchor (all of them, with it on).
propose(boxes, image_hw, config, matcher) -> (AnchorConfig, score): the best of a grid of
    layouts with as many anchors per location as `config` (the heads keep their shape): the
    smallest size (octave steps of 1/4; the levels keep doubling), scales spread over an
    octave, aspect ratios symmetric in log space or at the boxes' quantiles; ranked by the
    share of boxes at or above the positive threshold, then the mean best IoU. `config` is
    among the candidates, so the proposal is never worse by that ranking.
"""

import dataclasses
import itertools

import numpy as np

from retinanet_jax import settings as settings_lib
from retinanet_jax.data.summary import input_boxes
from retinanet_jax.errors import UserError
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops.matching import MatcherConfig

SIZE_RANGES = ((0, 16), (16, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, np.inf))


def best_iou(boxes: np.ndarray, image_hw, config: anchor_lib.AnchorConfig) -> np.ndarray:
    """Each box's best IoU over every anchor of the image (module docstring), [N]."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    best = np.zeros(len(boxes))
    if not len(boxes):
        return best
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i, (level, grid) in enumerate(
        zip(config.levels, anchor_lib.level_grid_sizes(image_hw, config), strict=True)
    ):
        stride_y, stride_x = anchor_lib.level_strides(image_hw, level, grid, config)
        for base in anchor_lib.base_anchors(i, config):  # [4] xyxy around (0, 0)
            overlap = np.ones(len(boxes))
            for axis, stride in ((0, stride_x), (1, stride_y)):
                lo, hi = boxes[:, axis], boxes[:, axis + 2]
                wanted = (lo + hi) / 2 - (base[axis] + base[axis + 2]) / 2  # best centre
                cell = np.clip(np.round(wanted / stride - config.offset), 0, grid[1 - axis] - 1)
                centre = (cell + config.offset) * stride
                side = np.minimum(hi, centre + base[axis + 2]) - np.maximum(lo, centre + base[axis])
                overlap *= np.maximum(side, 0.0)
            anchor_area = (base[2] - base[0]) * (base[3] - base[1])
            best = np.maximum(best, overlap / (area + anchor_area - overlap))
    return best


def coverage(boxes: np.ndarray, best: np.ndarray, matcher: MatcherConfig) -> dict:
    """Coverage per size range and in all (module docstring)."""
    boxes, best = np.asarray(boxes).reshape(-1, 4), np.asarray(best).reshape(-1)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    ranges = [*SIZE_RANGES, (0, np.inf)]
    rows = []
    for lo, hi in ranges:
        mine = (side >= lo) & (side < hi)
        if not mine.any():
            continue
        rows.append(
            {
                'range': 'all' if (lo, hi) == (0, np.inf) else f'{lo}-{hi}',
                'boxes': int(mine.sum()),
                'positive': float(np.mean(best[mine] >= matcher.positive_threshold)),
                'negative': float(np.mean(best[mine] >= matcher.negative_threshold)),
                'mean_best_iou': float(np.mean(best[mine])),
            }
        )
    low = best < matcher.positive_threshold
    return {'rows': rows, 'low_quality_only': int(low.sum()), 'low_quality_boxes': boxes[low]}


def score(best: np.ndarray, matcher: MatcherConfig) -> tuple[float, float]:
    """(share of boxes at or above the positive threshold, mean best IoU): what propose ranks by."""
    if not len(best):
        return 0.0, 0.0
    return float(np.mean(best >= matcher.positive_threshold)), float(np.mean(best))


def candidates(boxes: np.ndarray, config: anchor_lib.AnchorConfig):
    """The layouts propose tries (module docstring), `config` first."""
    yield config
    count = config.num_anchors_per_location
    ratios = (boxes[:, 3] - boxes[:, 1]) / np.maximum(boxes[:, 2] - boxes[:, 0], 1e-9)
    levels = len(config.levels)
    for num_scales in (n for n in (1, 2, 3, 4) if count % n == 0):
        num_ratios = count // num_scales
        ratio_sets = (
            {tuple(np.round(np.quantile(ratios, (np.arange(num_ratios) + 0.5) / num_ratios), 3))}
            if len(ratios)
            else set()
        )
        for spread in (1.5, 2.0, 3.0):
            exponents = np.linspace(-1, 1, num_ratios) if num_ratios > 1 else np.zeros(1)
            ratio_sets.add(tuple(np.round(spread**exponents, 3)))
        scales = tuple(float(2.0 ** (k / num_scales)) for k in range(num_scales))
        for step in range(-4, 5):
            first = config.sizes[0] * 2.0 ** (step / 4)
            sizes = tuple(round(first * 2.0**i, 2) for i in range(levels))
            for aspect in sorted(ratio_sets):
                yield dataclasses.replace(
                    config, sizes=sizes, scales=scales, aspect_ratios=tuple(map(float, aspect))
                )


def propose(boxes, image_hw, config: anchor_lib.AnchorConfig, matcher: MatcherConfig):
    """(the best AnchorConfig of `candidates`, its score)."""
    best_config, best_score = config, None
    for candidate in candidates(np.asarray(boxes).reshape(-1, 4), config):
        s = score(best_iou(boxes, image_hw, candidate), matcher)
        if best_score is None or s > best_score:
            best_config, best_score = candidate, s
    return best_config, best_score


def report(settings, split: str | None = None, max_images: int | None = 10_000) -> dict:
    """Coverage of `settings`' anchors on its training split (or `split`) and a proposal:
    {'dataset', 'split', 'images', 'image_hw', 'matcher', 'scale' (where the boxes are
    measured, for the text), 'current': {'anchors', 'score', 'coverage'}, 'proposed': {...}}."""
    source = settings_lib.make_sources(settings)[0]
    split = split or settings.data.train_split
    records = list(itertools.islice(source.ground_truth(split), max_images))
    train = split == settings.data.train_split  # by crops: the windows' boxes, on their canvas
    boxes = input_boxes(
        records, settings.input, split_size=source.num_examples(split) if train else None
    )
    if not len(boxes):
        raise UserError(f'split {split!r} of {source.name!r} has no boxes')
    matcher = settings.loss.matcher
    hw = settings.input.train_size if train else settings.image_hw
    proposed, _ = propose(boxes, hw, settings.anchors, matcher)
    out = {'dataset': settings.data.dataset, 'split': split, 'images': len(records)}
    crops = train and settings.input.crop_size is not None
    out |= {'image_hw': hw, 'matcher': dataclasses.asdict(matcher)}
    out['scale'] = 'in training windows' if crops else 'at the evaluation scale'
    for name, config in (('current', settings.anchors), ('proposed', proposed)):
        best = best_iou(boxes, hw, config)
        out[name] = {
            'anchors': config,
            'score': score(best, matcher),
            'coverage': coverage(boxes, best, matcher),
        }
    return out


def format_report(r: dict, set_keys=()) -> str:
    """The report as text: a coverage table for the current and proposed anchors, the boxes
    only low-quality matching catches, and the proposal as config lines to paste (and as
    --config flags where they give it exactly: `set_keys`, the anchor keys the config sets
    besides its preset, are among the proposal's)."""
    m = r['matcher']
    head = (
        f'anchor coverage on {r["dataset"]} {r["split"]}: {r["images"]} images, '
        f'{r["current"]["coverage"]["rows"][-1]["boxes"]} boxes, {r["scale"]} '
        f'(input {r["image_hw"][0]}x{r["image_hw"][1]}); a box is covered when its best '
        f'anchor reaches IoU {m["positive_threshold"]:g} (a positive) / '
        f'{m["negative_threshold"]:g} (not a negative)'
    )
    lines = [head]
    for name in ('current', 'proposed'):
        a, c = r[name]['anchors'], r[name]['coverage']
        lines.append(
            f'\n{name}: sizes {a.sizes}, scales {tuple(round(s, 3) for s in a.scales)}, '
            f'aspect ratios (h/w) {a.aspect_ratios}'
        )
        lines.append(
            f'  {"side (px)":>10} {"boxes":>7} {"IoU>=" + str(m["positive_threshold"]):>9} '
            f'{"IoU>=" + str(m["negative_threshold"]):>9} {"mean best":>9}'
        )
        for row in c['rows']:
            lines.append(
                f'  {row["range"]:>10} {row["boxes"]:7d} {row["positive"]:9.1%} '
                f'{row["negative"]:9.1%} {row["mean_best_iou"]:9.3f}'
            )
        low = c['low_quality_boxes']
        lines.append(
            f'  only low-quality matching gives an anchor to {c["low_quality_only"]} boxes'
            + (f' (e.g. {_describe(low)})' if len(low) else '')
        )
    a, paper = r['proposed']['anchors'], anchor_lib.AnchorConfig.paper()
    fields = {
        f.name: getattr(a, f.name)
        for f in dataclasses.fields(a)
        if getattr(a, f.name) != getattr(paper, f.name)
    }
    lines.append('\nproposed, in the config file (get_config):')
    pairs = ', '.join(f"'{k}': {v!r}" for k, v in fields.items())
    lines.append(f"    c.anchors = ml_collections.ConfigDict({{'preset': 'paper', {pairs}}})")
    if set(set_keys) <= set(fields):  # no other key of the config's anchors is set
        flags = ' '.join(
            ['--config.anchors.preset=paper']
            + [f"--config.anchors.{k}='{v}'" for k, v in fields.items()]
        )
        lines.append(f'or on the command line: {flags}')
    if r['proposed']['anchors'] == r['current']['anchors']:
        lines.append('(the current anchors are the best of the layouts tried)')
    return '\n'.join(lines)


def _describe(boxes: np.ndarray, count: int = 3) -> str:
    """The smallest and the most elongated of `boxes`, as 'w x h'."""
    wh = boxes[:, 2:] - boxes[:, :2]
    elongation = np.abs(np.log(np.maximum(wh[:, 1], 1e-9) / np.maximum(wh[:, 0], 1e-9)))
    picks = list(dict.fromkeys([*np.argsort(wh.prod(1))[:count], *np.argsort(-elongation)[:count]]))
    return ', '.join(dict.fromkeys(f'{wh[i, 0]:.0f}x{wh[i, 1]:.0f}' for i in picks))


def to_json(r: dict) -> dict:
    """The report as plain JSON values (anchor configs as dicts, boxes as lists)."""
    out = dict(r)
    for name in ('current', 'proposed'):
        c = dict(
            r[name]['coverage'], low_quality_boxes=r[name]['coverage']['low_quality_boxes'].tolist()
        )
        out[name] = {
            'anchors': dataclasses.asdict(r[name]['anchors']),
            'score': list(r[name]['score']),
            'coverage': c,
        }
    return out
