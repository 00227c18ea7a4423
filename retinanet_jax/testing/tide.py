"""A port of TIDE's box-mode error analysis (dbolya/tide, tidecv/quantify.py, ap.py and
errors/), to check error_analysis.tide_errors against.

It keeps TIDE's own matching, error tests, oracle fixes (BestGTMatch included) and AP
(APDataObject.get_ap: 101-point, scores sorted stably); it drops what box analysis on images
without ignore regions does not use (masks, qualifiers, plotting, ignore regions) and works on
plain lists instead of TIDE's Data objects. IoU is pycocotools' (TIDE's mask_utils.iou).

  tide(ground_truth, predictions, pos_thresh=0.5, bg_thresh=0.1, max_dets=100)
  ground_truth: [{'image', 'class', 'bbox' xywh}], predictions: [{'image', 'class', 'bbox',
  'score'}] -> {'ap': {class: AP}, 'fixed': {error: {class: AP}}, 'main': {error: dAP},
  'counts': {error: n}}
  (AP and dAP as fractions of 1; TIDE prints them x100)
"""

import numpy as np
from pycocotools import mask as mask_utils

ERRORS = ('cls', 'loc', 'both', 'dupe', 'bkg', 'miss')


def _ap(points: list, num_gt: int, recall_thresholds) -> float:  # APDataObject.get_ap
    if num_gt == 0:
        return 0.0
    points = sorted(points, key=lambda x: -x[0])
    precisions, recalls, true, false = [], [], 0, 0
    for _, correct in points:
        true, false = true + bool(correct), false + (not correct)
        precisions.append(true / (true + false))
        recalls.append(true / num_gt)
    for i in range(len(precisions) - 1, 0, -1):
        if precisions[i] > precisions[i - 1]:
            precisions[i - 1] = precisions[i]
    y = [0.0] * 101
    indices = np.searchsorted(np.asarray(recalls), recall_thresholds, side='left')
    for bar, i in enumerate(indices):
        if i < len(precisions):
            y[bar] = precisions[i]
    return sum(y) / len(y)


def _image(preds, gt, pos, bg, max_dets, state):
    """TIDEExample._run and TIDERun._eval_image for one image."""
    for g in gt:
        state['num_gt'][g['class']] = state['num_gt'].get(g['class'], 0) + 1
        g.update(used=False, usable=False)
    if not preds:
        state['errors'] += [('miss', g) for g in gt]
        return
    preds = sorted(preds, key=lambda p: -p['score'])[:max_dets]
    iou = np.zeros((len(preds), len(gt)))
    if gt:
        iou = np.asarray(
            mask_utils.iou([p['bbox'] for p in preds], [g['bbox'] for g in gt], [False] * len(gt))
        ).reshape(len(preds), len(gt))
    same = np.asarray([[p['class'] == g['class'] for g in gt] for p in preds]).reshape(iou.shape)
    cls_iou = iou * same
    buffer = cls_iou.copy()
    for i, p in enumerate(preds):
        p.update(used=False)
        if gt:
            j = int(np.argmax(buffer[i]))
            if buffer[i, j] >= pos:
                p['used'], gt[j]['used'], gt[j]['matched_with'] = True, True, p
                buffer[:, j] = 0
        state['points'].append(p)
    used = np.asarray([g['used'] for g in gt], bool)[None, :]
    for i, p in enumerate(preds):
        if p['used']:
            continue
        if not gt:
            state['errors'].append(('bkg', p))
            continue
        j = int(np.argmax(cls_iou[i]))
        if bg <= cls_iou[i, j] <= pos:
            state['errors'].append(('loc', p, _best_match(p, gt[j])))
            continue
        noncls = iou[i] * ~same[i]
        j = int(np.argmax(noncls))
        if noncls[j] >= pos:
            state['errors'].append(('cls', p, _best_match(p, gt[j])))
            continue
        used_cls = (used * iou * same)[i]
        if used_cls[int(np.argmax(used_cls))] >= pos:
            state['errors'].append(('dupe', p))
            continue
        if iou[i, int(np.argmax(iou[i]))] <= bg:
            state['errors'].append(('bkg', p))
            continue
        state['errors'].append(('both', p))
    state['errors'] += [('miss', g) for g in gt if not g['used'] and not g['usable']]


def _best_match(pred, gt) -> dict:  # errors/error.py BestGTMatch.__init__
    if gt['used']:
        return {'gt': gt, 'suppress': True}
    gt['usable'] = True
    if gt.get('best_score', -1) < pred['score']:
        gt['best_score'], gt['best_id'] = pred['score'], id(pred)
    return {'gt': gt, 'suppress': False}


def _fixed_points(error_type, state) -> tuple[dict, dict]:
    """TIDERun.fix_errors for one error type: {class: [(score, true)]}, {class: num_gt}."""
    points, num_gt = {}, dict(state['num_gt'])
    fixing = {id(e[1]): e for e in state['errors'] if e[0] == error_type and e[0] != 'miss'}
    for p in state['points']:
        e = fixing.get(id(p))
        if e is None:
            points.setdefault(p['class'], []).append((p['score'], p['used']))
        elif e[0] in ('cls', 'loc'):
            match = e[2]
            if not match['suppress'] and match['gt']['best_id'] == id(p):
                c = match['gt']['class'] if e[0] == 'cls' else p['class']
                points.setdefault(c, []).append((p['score'], True))
    if error_type == 'miss':
        for e in state['errors']:
            if e[0] == 'miss':
                num_gt[e[1]['class']] -= 1
    return points, num_gt


TIDE_RECALLS = np.asarray([x / 100 for x in range(101)])  # TIDE's x_range


def tide(
    ground_truth,
    predictions,
    pos_thresh=0.5,
    bg_thresh=0.1,
    max_dets=100,
    recall_thresholds=TIDE_RECALLS,
) -> dict:
    """`recall_thresholds`: TIDE's x / 100, or pycocotools' np.linspace(0, 1, 101), which
    differ in the last bit at some thresholds (0.07, 0.29, ...): where a recall lands exactly
    on one of those, the AP of the two differs by a precision step."""
    state = {'num_gt': {}, 'points': [], 'errors': []}
    images = sorted({g['image'] for g in ground_truth} | {p['image'] for p in predictions})
    for image in images:
        gt = [dict(g) for g in ground_truth if g['image'] == image]
        preds = [dict(p) for p in predictions if p['image'] == image]
        _image(preds, gt, pos_thresh, bg_thresh, max_dets, state)
    classes = sorted(set(state['num_gt']) | {p['class'] for p in state['points']})

    def class_aps(points, num_gt):  # ClassedAPDataObject: classes neither empty of points nor GT
        kept = [c for c in classes if points.get(c) or num_gt.get(c, 0)]
        return {c: _ap(points.get(c, []), num_gt.get(c, 0), recall_thresholds) for c in kept}

    base_points = {}
    for p in state['points']:
        base_points.setdefault(p['class'], []).append((p['score'], p['used']))
    ap = class_aps(base_points, state['num_gt'])
    fixed = {t: class_aps(*_fixed_points(t, state)) for t in ERRORS}
    mean = np.mean(list(ap.values()))
    main = {t: max(float(np.mean(list(fixed[t].values())) - mean), 0.0) for t in ERRORS}
    counts = {t: sum(e[0] == t for e in state['errors']) for t in ERRORS}
    return {'ap': ap, 'fixed': fixed, 'main': main, 'counts': counts}
