"""Training: typed settings -> train state, sharded train step, and the loop with checkpoints,
evaluation and metrics.

`train_and_evaluate(config, workdir)` is what `python train.py --config=...` runs; the config is
read once, by settings.from_config. The train state is one pytree:
  state = {'model': nnx.State of the model (Params, Frozen weights, BatchStats),
           'optimizer': nnx.State of the nnx.Optimizer (step, optax state of the Params)}
with its static structure in a `TrainGraph` (nnx graphdefs). The train step is one jax.jit over
a ('data',) mesh: state replicated, batch split, state donated. The loss normaliser sums
positives over the global batch, and trainable batch norm reduces its statistics over the
global batch too (synchronised batch norm), because the step sees global arrays.
"""

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from retinanet_jax import anchors as anchor_lib
from retinanet_jax import (
    checkpoint,
    compiler_options,
    convert,
    evaluation,
    inference,
    losses,
    optim,
    settings,
    sharding,
)
from retinanet_jax.models import construct_model
from retinanet_jax.normalization import normalize_images


@dataclasses.dataclass(frozen=True)
class TrainGraph:
    """The static structure of a train state: the model's graphdef in training mode (batch
    statistics), in eval mode (running statistics), and the optimizer's."""

    model: nnx.GraphDef
    eval_model: nnx.GraphDef
    optimizer: nnx.GraphDef


def _build(s: settings.Settings):
    model = construct_model(s.model, seed=s.seed)
    tx = optim.make_optimizer(s.optim, s.train_steps)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def create_state(s: settings.Settings, mesh) -> tuple[TrainGraph, dict]:
    """(graph, state) of a fresh run, the state created directly as replicated arrays on the
    mesh (jit with out_shardings; shapes come from eval_shape, nothing is built twice)."""
    model, optimizer = nnx.eval_shape(lambda: _build(s))
    graph = TrainGraph(
        nnx.graphdef(model), inference.eval_graphdef(s.model), nnx.graphdef(optimizer)
    )

    def init():
        model, optimizer = _build(s)
        return {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}

    state = jax.jit(init, out_shardings=sharding.replicated(mesh),
                    compiler_options=compiler_options.run_once())()  # fmt: skip
    return graph, state


def abstract_state(state: dict) -> dict:
    """Shape-dtype structs (with their shardings) of a train state, to restore into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)  # fmt: skip


def init_backbone(graph: TrainGraph, state: dict, path: str, mesh) -> dict:
    """A train state whose backbone holds a torchvision ImageNet ResNet state dict file
    (.pth / .safetensors / .npz, see convert.load_state_dict); errors name the file."""
    model = nnx.merge(graph.model, state['model'])
    try:
        convert.load_resnet_from_torchvision(model, convert.load_state_dict(path))
    except ValueError as e:
        raise ValueError(f'config.init.backbone={path}: {e}') from None
    rep = sharding.replicated(mesh)
    model_state = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), nnx.state(model)
    )
    return {**state, 'model': model_state}


def make_train_step(graph: TrainGraph, anchors: np.ndarray, s: settings.Settings, mesh):
    """jit(state, batch) -> (state, metrics); state donated, batch split over 'data'.

    batch: 'image' uint8 [B, H, W, 3], 'gt_boxes' float32 [B, M, 4] xyxy, 'gt_labels' int32
    [B, M] (-1 = padding). The model runs in training mode: trainable batch norm normalises
    with the statistics of the global batch and updates its running statistics."""
    schedule = optim.make_schedule(s.optim, s.train_steps)
    anchors = jnp.asarray(anchors)

    def step(state, batch):
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
                s.loss,
            )

        (loss, aux), grads = nnx.value_and_grad(
            loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True
        )(model)
        optimizer.update(model, grads)
        metrics = {
            'loss': loss,
            **aux,
            'grad_norm': optax.tree.norm(grads),
            'learning_rate': learning_rate,
            'positives_per_image': aux['num_positives'] / batch['image'].shape[0],
        }
        return {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}, metrics

    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, split), out_shardings=(rep, rep), donate_argnums=0,
                   compiler_options=compiler_options.default())  # fmt: skip


# --------------------------------------------------------------------------- orchestration


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (resuming from `workdir` if it holds checkpoints), evaluates, returns metrics."""
    from tqdm import tqdm

    entered = time.time()
    s = settings.from_config(config)
    convert.import_torch_before_tensorflow(s.init_backbone)  # a .pth is read after tf loads
    from retinanet_jax.data import pipeline

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    local_batch = sharding.local_batch_size(s.batch_size)
    source, evaluated = settings.make_sources(s)
    anchors = np.asarray(anchor_lib.generate_anchors(s.image_hw, s.anchors))

    # ---------------------------------------------------------------- state, maybe resumed
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_ds = pipeline.train_dataset(source, s.input, local_batch, split=s.data.train_split,
                                      **process)  # fmt: skip
    order = pipeline.order_of(source, s.input, local_batch, split=s.data.train_split,
                              process_count=jax.process_count())  # fmt: skip
    graph, state = create_state(s, mesh)
    manager = checkpoint.run_checkpoints(workdir, keep=s.keep_checkpoints)
    restored, start_step = checkpoint.restore_run(manager, abstract_state(state), data=True)
    if restored is not None:
        # The input resumes at the checkpoint's position, if the order is still the same.
        pipeline.check_position(restored['data'], order, start_step,
                                f'{workdir}/checkpoints/{start_step}/data')  # fmt: skip
        state = {'model': restored['model'], 'optimizer': restored['optimizer']}
        print(f'resumed from {workdir}/checkpoints at step {start_step}')
    elif s.init_backbone:
        state = init_backbone(graph, state, s.init_backbone, mesh)
        print(f'backbone initialised from {s.init_backbone}')
    if jax.process_index() == 0:  # only once the workdir is known to be this run's
        (workdir / 'config.json').write_text(settings.to_json(config))
    train_step = make_train_step(graph, anchors, s, mesh)
    predict = inference.make_predict_step(graph.eval_model, s.image_hw, s.anchors,
                                          s.postprocess, mesh)  # fmt: skip

    # ---------------------------------------------------------------- data
    # Batch k of train_ds is step k's: the iterator starts at start_step, reading nothing before.
    train_iter = pipeline.train_iterator(train_ds, start_step)
    eval_ds, eval_batches = pipeline.eval_dataset(
        evaluated, s.input, local_batch, split=s.data.eval_split, **process
    )
    evaluator = evaluation.make_evaluator(evaluated, s.data.eval_split, config=s.evaluation)
    writer = MetricWriter(workdir / 'logs') if jax.process_index() == 0 else None

    # ---------------------------------------------------------------- loop
    history, start, last_saved, eval_seconds = {}, time.time(), start_step, 0.0
    first_step_seconds = None
    # The rate and ETA come from finished steps (the bar counts a step once its result is
    # ready), averaged over the last ~20 (tqdm's smoothing), so checkpoint saves and machine
    # noise do not swing them.
    bar = tqdm(initial=start_step, total=s.train_steps, desc='train', smoothing=0.05,
               disable=jax.process_index() != 0)  # fmt: skip
    previous = None  # the last step's metrics: waited for before the bar counts that step
    for step in range(start_step, s.train_steps):
        batch = sharding.to_global(next(train_iter), mesh)
        state, metrics = train_step(state, batch)
        if step == start_step:  # start-up, compilation (or a cache hit) and one step
            jax.block_until_ready(metrics)
            first_step_seconds = time.time() - entered
        if previous is not None:
            jax.block_until_ready(previous)
            bar.update(1)
        previous = metrics['loss']
        done = step + 1
        if done % s.log_every == 0 or done == s.train_steps:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(metrics['loss']):
                raise FloatingPointError(
                    f'non-finite loss {metrics["loss"]} at step {done}; last good checkpoint: '
                    f'{workdir}/checkpoints/{last_saved or "none"}'
                )
            metrics['images_per_second'] = (
                s.batch_size * (done - start_step) / (time.time() - start)
            )
            bar.set_postfix(loss=f'{metrics["loss"]:.3f}',
                            pos=f'{metrics["positives_per_image"]:.0f}')  # fmt: skip
            if writer:
                writer.write(done, metrics)
        if done % s.checkpoint_every == 0 or done == s.train_steps:
            checkpoint.save_run(manager, done, state, {'next_index': done, 'order': order})
            last_saved = done
        if done % s.eval_every == 0 or done == s.train_steps:
            jax.block_until_ready(previous)
            eval_start = time.time()
            history[done] = inference.evaluate(predict, state['model'],
                                               pipeline.eval_batches(eval_ds), eval_batches,
                                               evaluator, mesh, tqdm)  # fmt: skip
            eval_seconds += time.time() - eval_start
            if writer:
                writer.write(done, {f'eval/{k}': v for k, v in history[done].items()})
            if done != s.train_steps:
                tqdm.write(f'step {done} eval:\n{evaluation.format_table(history[done])}')
    if previous is not None:
        jax.block_until_ready(previous)
        bar.update(1)
    bar.close()
    manager.close()

    # ---------------------------------------------------------------- summary
    final = history.get(s.train_steps) or inference.evaluate(
        predict, state['model'], pipeline.eval_batches(eval_ds), eval_batches, evaluator, mesh
    )
    # wall_seconds: the loop, evaluations included; train_seconds: the loop without them.
    wall = time.time() - start
    summary = {'step': s.train_steps, 'wall_seconds': wall, 'train_seconds': wall - eval_seconds,
               'first_step_seconds': first_step_seconds, **final}  # fmt: skip
    if jax.process_index() == 0:
        (workdir / 'metrics.json').write_text(json.dumps(summary, indent=1))
        print(f'final evaluation ({s.data.evaluated} {s.data.eval_split}):')
        print(evaluation.format_table(final))
        print(f'wrote {workdir}/metrics.json')
    return summary


class MetricWriter:
    """Scalars to TensorBoard event files (tf.summary)."""

    def __init__(self, logdir: Path):
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(logdir))

    def write(self, step: int, metrics: dict) -> None:
        with self._writer.as_default(step=step):
            for k, v in metrics.items():
                self._tf.summary.scalar(k, v)
        self._writer.flush()
