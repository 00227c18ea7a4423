"""The sharded train step: forward, detection loss, gradient, optimiser update, the EMA of the
weights (config.ema on; ema.py) and, with skip_nonfinite, a non-finite step that changes
nothing (the EMA included).

  step = make_train_step(graph, anchors, settings, mesh)
  state, metrics = step(state, batch)   # jit; state (state.py) donated, batch split

The loss normaliser sums positives over the global batch, and trainable batch norm reduces its
statistics over the global batch too (synchronised batch norm), because the step sees global
arrays.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from retinanet_jax import compiler_options, sharding
from retinanet_jax import settings as settings_lib
from retinanet_jax.ops import losses
from retinanet_jax.ops.normalization import normalize_images
from retinanet_jax.training import optim
from retinanet_jax.training.ema import ema_decay, update_ema
from retinanet_jax.training.state import TrainGraph


def make_train_step(graph: TrainGraph, anchors: np.ndarray, settings: settings_lib.Settings, mesh):
    """jit(state, batch) -> (state, metrics); state donated, batch split over 'data'.

    batch: 'image' uint8 [B, H, W, 3], 'gt_boxes' float32 [B, M, 4] xyxy, 'gt_labels' int32
    [B, M] (-1 = padding). The model runs in training mode: trainable batch norm normalises
    with the statistics of the global batch and updates its running statistics.

    The same arguments again in one process give the same jitted step (no new trace)."""
    anchors = np.asarray(anchors, np.float32)
    return _train_step(
        graph,
        (anchors.shape, anchors.tobytes()),
        settings.optim,
        settings.train_steps,
        settings.loss,
        settings.ema,
        settings.skip_nonfinite,
        mesh,
    )


@functools.lru_cache(maxsize=4)
def _train_step(graph, anchor_bytes, optim_config, train_steps, loss_config, ema, skip, mesh):
    schedule = optim.make_schedule(optim_config, train_steps)
    shape, data = anchor_bytes
    anchors = jnp.asarray(np.frombuffer(data, np.float32).reshape(shape))

    def step(state, batch):
        # The state before the update, kept apart: merge shares variables, which update mutates.
        before = jax.tree.map(lambda x: x, state) if skip else None
        model = nnx.merge(graph.model, state['model'])
        optimizer = nnx.merge(graph.optimizer, state['optimizer'])
        learning_rate = schedule(optimizer.step[...])  # the rate this update uses

        def loss_fn(model):
            out = model(normalize_images(batch['image']))
            return losses.detection_loss(
                out['cls_logits'],
                out['box_deltas'],
                anchors,
                batch['gt_boxes'],
                batch['gt_labels'],
                loss_config,
            )

        (loss, aux), grads = nnx.value_and_grad(
            loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True
        )(model)
        updates_before = optimizer.step[...]
        optimizer.update(model, grads)
        grad_norm = optax.tree.norm(grads)
        metrics = {
            'loss': loss,
            **aux,
            'grad_norm': grad_norm,
            'learning_rate': learning_rate,
            'positives_per_image': aux['num_positives'] / batch['image'].shape[0],
        }
        new = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
        if ema.enabled:  # the average of the weights after this update
            decay = ema_decay(ema, updates_before)
            new['ema'] = update_ema(state['ema'], new['model'], decay)
            metrics['ema_decay'] = decay
        if skip:  # a non-finite step changes nothing, batch statistics included
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, before)
            metrics['skipped'] = 1.0 - finite.astype(jnp.float32)
        return new, metrics

    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(
        step,
        in_shardings=(rep, split),
        out_shardings=(rep, rep),
        donate_argnums=0,
        compiler_options=compiler_options.default(),
    )
