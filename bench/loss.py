"""Detection loss forward + gradient at the reference shapes, against the references.

Shapes: B=2 images of 640x832 -> R=99,765 anchors, K=20 classes, 20 ground-truth boxes per
image (padded M=20). Three implementations on the same inputs, same CPU threads:
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


def make_problem(image_hw, batch, num_classes, num_boxes, seed=0):
    from retinanet_jax import anchors as anchor_lib

    anchors = anchor_lib.generate_anchors(image_hw, anchor_lib.AnchorConfig.pytorch_retinanet())
    rng = np.random.default_rng(seed)
    r = len(anchors)
    cls_logits = rng.normal(-4.0, 1.5, (batch, r, num_classes)).astype(np.float32)
    box_deltas = rng.normal(0.0, 0.5, (batch, r, 4)).astype(np.float32)
    h, w = image_hw
    size = rng.uniform(16, 300, (batch, num_boxes, 2))
    centre = rng.uniform(0, 1, (batch, num_boxes, 2)) * [w, h]
    gt_boxes = np.concatenate([centre - size / 2, centre + size / 2], -1)
    gt_boxes = np.clip(gt_boxes, 0, [w, h, w, h]).astype(np.float32)
    gt_labels = rng.integers(0, num_classes, (batch, num_boxes)).astype(np.int32)
    return np.asarray(anchors), cls_logits, box_deltas, gt_boxes, gt_labels


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    import jax
    import torch

    from bench.timing import time_fn
    from retinanet_jax.losses import LossConfig, detection_loss
    from retinanet_jax.testing.pytorch_retinanet import FocalLoss
    from retinanet_jax.testing.torchvision_retinanet import tiny_retinanet

    torch.set_num_threads(threads)
    dev = torch.device('cuda' if device == 'gpu' else 'cpu')
    sync = torch.cuda.synchronize if device == 'gpu' else (lambda: None)
    image_hw, k = ((128, 160), 5) if quick else ((640, 832), 20)
    runs = 3 if quick else 30
    anchors, cls_logits, box_deltas, gt_boxes, gt_labels = make_problem(image_hw, 2, k, 20)
    print(
        f'anchors R={len(anchors)}, B=2, K={k}, M=20, torch threads={threads}, '
        f'jax {jax.__version__}'
    )

    args = [jax.device_put(x) for x in (cls_logits, box_deltas, anchors, gt_boxes, gt_labels)]
    results = []
    for preset in ('pytorch_retinanet', 'torchvision'):
        loss = functools.partial(detection_loss, config=getattr(LossConfig, preset)())
        grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        results.append(
            time_fn(
                f'ours: detection_loss fwd+grad, {preset} preset',
                lambda grad_fn=grad_fn: jax.block_until_ready(grad_fn(*args)),
                runs,
                reference=REFERENCE[preset],
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

    results.append(time_fn(REFERENCE['pytorch_retinanet'], reference, runs))

    model = tiny_retinanet(k).to(dev)
    targets = [
        {
            'boxes': torch.tensor(gt_boxes[i], device=dev),
            'labels': torch.tensor(gt_labels[i], device=dev).long(),
        }
        for i in range(2)
    ]

    def torchvision():
        c, b = torch_inputs()
        out = model.compute_loss(targets, {'cls_logits': c, 'bbox_regression': b}, [anchors_t] * 2)
        (out['classification'] + out['bbox_regression']).backward()
        sync()

    results.append(time_fn(REFERENCE['torchvision'], torchvision, runs))
    return results
