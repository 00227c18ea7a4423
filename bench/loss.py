"""Detection loss forward + gradient at the reference shapes, against the references.

Shapes: B=2 images of 640x832 -> R=99,765 anchors, K=20 classes; two ground-truth problems on
the same logits (PROBLEMS below: 20 boxes per image, and 12 slots mostly padding). Three
implementations on the same inputs, same CPU threads:
  ours         jax.jit(value_and_grad(detection_loss)) with LossConfig.pytorch_retinanet() and
               with LossConfig.torchvision() (the like-for-like pair of each reference)
  reference    pytorch-retinanet FocalLoss (per-image Python loop), forward + backward
  torchvision  RetinaNet.compute_loss (per-image loop), forward + backward
"""

import functools

import numpy as np

REFERENCE = {
    'pytorch_retinanet': 'reference: pytorch-retinanet FocalLoss fwd+bwd',
    'torchvision': 'torchvision: RetinaNet.compute_loss fwd+bwd',
}


# The two ground-truth problems timed on the same logits:
#   bench  20 valid boxes in each image (M = 20), 16-300 pixels across
#   seed   the kind the first version of this project was measured on: 12 slots, one image
#          with 2 boxes and one with 7, the rest padding (label -1), 100-500 pixels across
PROBLEMS = {
    'bench': dict(slots=20, boxes=(20, 20), sizes=(16, 300)),
    'seed': dict(slots=12, boxes=(2, 7), sizes=(100, 500)),
}


def make_problem(image_hw, batch, num_classes, problem='bench', seed=0):
    from retinanet_jax.ops import anchors as anchor_lib

    anchors = anchor_lib.generate_anchors(image_hw, anchor_lib.AnchorConfig.pytorch_retinanet())
    rng = np.random.default_rng(seed)
    r = len(anchors)
    cls_logits = rng.normal(-4.0, 1.5, (batch, r, num_classes)).astype(np.float32)
    box_deltas = rng.normal(0.0, 0.5, (batch, r, 4)).astype(np.float32)
    spec = PROBLEMS[problem]
    h, w = image_hw
    m = spec['slots']
    size = rng.uniform(*spec['sizes'], (batch, m, 2))
    centre = rng.uniform(0, 1, (batch, m, 2)) * [w, h]
    gt_boxes = np.concatenate([centre - size / 2, centre + size / 2], -1)
    gt_boxes = np.clip(gt_boxes, 0, [w, h, w, h]).astype(np.float32)
    gt_labels = rng.integers(0, num_classes, (batch, m)).astype(np.int32)
    for i, n in enumerate(spec['boxes'][:batch]):
        gt_boxes[i, n:], gt_labels[i, n:] = 0.0, -1  # padding rows
    return np.asarray(anchors), cls_logits, box_deltas, gt_boxes, gt_labels


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    import jax
    import torch

    torch.set_num_threads(threads)
    dev = torch.device('cuda' if device == 'gpu' else 'cpu')
    sync = torch.cuda.synchronize if device == 'gpu' else (lambda: None)
    image_hw, k = ((128, 160), 5) if quick else ((640, 832), 20)
    runs = 1 if quick else 30
    results = []
    for problem in PROBLEMS:
        inputs = make_problem(image_hw, 2, k, problem)
        m = PROBLEMS[problem]['slots']
        print(
            f'problem {problem}: anchors R={len(inputs[0])}, B=2, K={k}, M={m}, '
            f'torch threads={threads}, jax {jax.__version__}'
        )
        results += time_problem(problem, inputs, k, runs, dev, sync)
    return results


def time_problem(problem, inputs, k, runs, dev, sync) -> list:
    import jax
    import torch

    from bench.timing import time_fn
    from retinanet_jax.ops.losses import LossConfig, detection_loss
    from retinanet_jax.testing.pytorch_retinanet import FocalLoss
    from retinanet_jax.testing.torchvision_retinanet import tiny_retinanet

    anchors, cls_logits, box_deltas, gt_boxes, gt_labels = inputs
    args = [jax.device_put(x) for x in (cls_logits, box_deltas, anchors, gt_boxes, gt_labels)]
    names = {key: f'{value}, {problem} problem' for key, value in REFERENCE.items()}
    results = []
    for preset in ('pytorch_retinanet', 'torchvision'):
        loss = functools.partial(detection_loss, config=getattr(LossConfig, preset)())
        grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        results.append(
            time_fn(
                f'ours: detection_loss fwd+grad, {preset} preset, {problem} problem',
                lambda grad_fn=grad_fn: jax.block_until_ready(grad_fn(*args)),
                runs,
                reference=names[preset],
            )
        )

    def torch_inputs():
        c = torch.tensor(cls_logits, device=dev, requires_grad=True)
        b = torch.tensor(box_deltas, device=dev, requires_grad=True)
        return c, b

    anchors_t = torch.tensor(anchors, device=dev)
    annotations = torch.tensor(np.concatenate([gt_boxes, gt_labels[..., None]], -1), device=dev)
    focal = FocalLoss()

    def reference():
        c, b = torch_inputs()
        cls, box = focal(torch.sigmoid(c), b, anchors_t[None], annotations)
        (cls + box).sum().backward()
        sync()

    results.append(time_fn(names['pytorch_retinanet'], reference, runs))

    model = tiny_retinanet(k).to(dev)
    targets = [  # torchvision takes each image's real boxes (no padding rows)
        {
            'boxes': torch.tensor(gt_boxes[i][gt_labels[i] >= 0], device=dev),
            'labels': torch.tensor(gt_labels[i][gt_labels[i] >= 0], device=dev).long(),
        }
        for i in range(2)
    ]

    def torchvision():
        c, b = torch_inputs()
        out = model.compute_loss(targets, {'cls_logits': c, 'bbox_regression': b}, [anchors_t] * 2)
        (out['classification'] + out['bbox_regression']).backward()
        sync()

    results.append(time_fn(names['torchvision'], torchvision, runs))
    return results
