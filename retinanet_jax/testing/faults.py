"""Fault injection for the tests and `python -m bench faults`: training steps whose loss and
gradients are not finite, on the batches that the run really reads.

  with faults.non_finite_steps({3, 4}):
      trainer.train_and_evaluate(config, workdir)   # steps 3 and 4: NaN loss and gradients

A poisoned batch carries POISON_LABEL in the last ground-truth slot of each image (a padding
slot: the real loss ignores it); the wrapped detection loss multiplies the loss by NaN where it
finds one, so the gradient is NaN too, as a real divergence gives. Only runs traced inside the
context are affected (the train step is traced when the run starts).
"""

import contextlib

import jax.numpy as jnp

POISON_LABEL = -7


@contextlib.contextmanager
def non_finite_steps(steps):
    from retinanet_jax.data import pipeline
    from retinanet_jax.ops import losses

    steps = set(steps)
    real_loss, real_iterator = losses.detection_loss, pipeline.train_iterator

    def detection_loss(cls_logits, box_deltas, anchors, gt_boxes, gt_labels, *args, **kwargs):
        loss, aux = real_loss(cls_logits, box_deltas, anchors, gt_boxes, gt_labels, *args, **kwargs)
        return loss * jnp.where(jnp.any(gt_labels == POISON_LABEL), jnp.nan, 1.0), aux

    def train_iterator(dataset, start_step=0, threads=0, workers=0):
        batches = real_iterator(dataset, start_step, threads, workers)
        try:
            for step, batch in enumerate(batches, start_step + 1):
                if step in steps:
                    labels = batch['gt_labels'].copy()
                    labels[:, -1] = POISON_LABEL
                    batch = {**batch, 'gt_labels': labels}
                yield batch
        finally:
            batches.close()

    losses.detection_loss, pipeline.train_iterator = detection_loss, train_iterator
    try:
        yield
    finally:
        losses.detection_loss, pipeline.train_iterator = real_loss, real_iterator
