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
import functools
import json
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
    coco_metrics,
    compiler_options,
    evaluation,
    hooks,
    inference,
    losses,
    optim,
    preemption,
    settings,
    sharding,
    torchvision_weights,
)
from retinanet_jax.loop import Loop
from retinanet_jax.models import build_retinanet
from retinanet_jax.normalization import normalize_images


@dataclasses.dataclass(frozen=True)
class TrainGraph:
    """The static structure of a train state: the model's graphdef in training mode (batch
    statistics), in eval mode (running statistics), and the optimizer's."""

    model: nnx.GraphDef
    eval_model: nnx.GraphDef
    optimizer: nnx.GraphDef


def _build(s: settings.Settings):
    model = build_retinanet(s.model, seed=s.seed)
    tx = optim.make_optimizer(s.optim, s.train_steps)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def train_graph(s: settings.Settings, mesh) -> tuple[TrainGraph, dict]:
    """(graph, abstract state) of a run: the static structure and the shape-dtype structs
    (replicated on the mesh) of its train state, from eval_shape: nothing is computed. A
    resumed run restores into the abstract state; a fresh one calls create_state."""
    model, optimizer = nnx.eval_shape(lambda: _build(s))
    graph = TrainGraph(
        nnx.graphdef(model), inference.eval_graphdef(s.model), nnx.graphdef(optimizer)
    )
    rep = sharding.replicated(mesh)
    state = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
    return graph, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state
    )


def create_state(s: settings.Settings, mesh) -> tuple[TrainGraph, dict]:
    """(graph, state) of a fresh run, the state created directly as replicated arrays on the
    mesh (one computation, jit with out_shardings)."""
    graph, _ = train_graph(s, mesh)

    def init():
        model, optimizer = _build(s)
        return {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}

    state = jax.jit(
        init, out_shardings=sharding.replicated(mesh), compiler_options=compiler_options.run_once()
    )()
    return graph, state


def abstract_state(state: dict) -> dict:
    """Shape-dtype structs (with their shardings) of a train state, to restore into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def init_backbone(graph: TrainGraph, state: dict, path: str, mesh) -> dict:
    """A train state whose backbone holds a torchvision ImageNet ResNet state dict file
    (.pth / .safetensors / .npz, see torchvision_weights.load_state_dict); errors name the file."""
    model = nnx.merge(graph.model, state['model'])
    try:
        weights = torchvision_weights.load_state_dict(path)
        torchvision_weights.load_resnet_from_torchvision(model, weights)
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
        # The state before the update, kept apart: merge shares variables, which update mutates.
        before = jax.tree.map(lambda x: x, state) if s.skip_nonfinite else None
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
        grad_norm = optax.tree.norm(grads)
        metrics = {
            'loss': loss,
            **aux,
            'grad_norm': grad_norm,
            'learning_rate': learning_rate,
            'positives_per_image': aux['num_positives'] / batch['image'].shape[0],
        }
        new = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
        if s.skip_nonfinite:  # a non-finite step changes nothing, batch statistics included
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


# --------------------------------------------------------------------------- orchestration


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (resuming from `workdir` if it holds checkpoints), evaluates, returns metrics.
    A SIGTERM / SIGINT from here on (set-up and compilation included) ends the run after the
    next step, with a checkpoint of it: preemption.Preempted is raised."""
    with preemption.PreemptionWatcher() as watcher:
        return train_with(watcher, config, workdir)


def train_with(watcher: preemption.PreemptionWatcher, config, workdir: str) -> dict:
    """train_and_evaluate, stopped by `watcher`'s signals."""
    from tqdm import tqdm

    entered = time.time()
    s = settings.from_config(config)
    from retinanet_jax.data import pipeline
    from retinanet_jax.data.bad_records import BadRecords

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    local_batch = sharding.local_batch_size(s.batch_size)
    source, evaluated = settings.make_sources(s)
    anchors = np.asarray(anchor_lib.generate_anchors(s.image_hw, s.anchors))
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    bad = None
    if s.data.on_bad_record == 'skip':  # those of the run so far, if it resumes
        bad = BadRecords(s.data.max_bad_fraction, jax.process_count())
        bad.load(bad_records_file(workdir))
    train_ds = pipeline.train_dataset(
        source, s.input, local_batch, split=s.data.train_split, bad_records=bad, **process
    )
    order = pipeline.order_of(
        source, s.input, local_batch, split=s.data.train_split, process_count=jax.process_count()
    )
    manager = checkpoint.run_checkpoints(workdir, keep=s.keep_checkpoints)
    graph, state, start_step = resume_or_create(s, mesh, manager, order)
    if jax.process_index() == 0:  # only once the workdir is known to be this run's
        (workdir / 'config.json').write_text(settings.to_json(config))
    predict = inference.make_predict_step(
        graph.eval_model, s.image_hw, s.anchors, s.postprocess, mesh
    )
    eval_ds, eval_batches = pipeline.eval_dataset(
        evaluated, s.input, local_batch, split=s.data.eval_split, **process
    )
    evaluator = coco_metrics.make_evaluator(evaluated, s.data.eval_split, config=s.evaluation)

    def evaluate(model_state, progress=tqdm):
        return evaluation.evaluate_model(
            predict,
            model_state,
            pipeline.eval_batches(eval_ds),
            eval_batches,
            evaluator,
            mesh,
            progress,
        )

    def describe(ids):  # the files of a batch's images, where the source reads files
        files = source.image_files(s.data.train_split, ids)
        return f' (files {files})' if files else ''

    writer = hooks.MetricWriter(workdir / 'logs') if jax.process_index() == 0 else None
    checkpointer = hooks.Checkpointer(manager, s.checkpoint_every, order, start_step)
    guard = hooks.NonFiniteGuard(s.skip_nonfinite, checkpointer, describe)
    progress = hooks.Progress(s.log_every, entered, enabled=jax.process_index() == 0)
    evaluations = hooks.Evaluator(evaluate, s.eval_every, writer, progress)
    start = time.time()
    with manager:
        side_actions = [
            guard,
            progress,
            hooks.MetricLogger(writer, s.log_every, s.batch_size, guard),
            *([hooks.BadRecordLog(bad, bad_records_file(workdir))] if bad else []),
            checkpointer,
            hooks.PreemptionHook(checkpointer, watcher),  # before an evaluation: save first
            evaluations,
        ]
        state = Loop(
            make_train_step(graph, anchors, s, mesh),
            pipeline.train_iterator(train_ds, start_step),
            functools.partial(sharding.to_global, mesh=mesh),
            state,
            start_step,
            s.train_steps,
            side_actions,
        ).run()
    final = evaluations.history.get(s.train_steps) or evaluate(state['model'], None)
    wall = time.time() - start
    summary = {
        'step': s.train_steps,
        'wall_seconds': wall,
        'train_seconds': wall - evaluations.seconds,
        'first_step_seconds': progress.first_step_seconds,
        'nonfinite_skipped': guard.skipped,
        **final,
    }
    write_summary(workdir, summary, f'{s.data.evaluated} {s.data.eval_split}')
    return summary


def resume_or_create(s: settings.Settings, mesh, manager, order: dict):
    """(graph, state, step): the newest checkpoint of the run that restores (restore_newest),
    else a fresh state (with the backbone of config.init.backbone)."""
    graph, abstract = train_graph(s, mesh)  # a resumed run never initialises a fresh state
    restored, start_step = restore_newest(manager, abstract, order)
    if restored is not None:
        print(f'resumed from {manager.directory} at step {start_step}', flush=True)
        return graph, {'model': restored['model'], 'optimizer': restored['optimizer']}, start_step
    graph, state = create_state(s, mesh)
    if s.init_backbone:
        state = init_backbone(graph, state, s.init_backbone, mesh)
        print(f'backbone initialised from {s.init_backbone}')
    return graph, state, 0


def restore_newest(manager, abstract: dict, order: dict) -> tuple[dict | None, int]:
    """checkpoint.restore_newest_readable of a run's train state, its input position checked
    against this run's `order` (pipeline.order_of): a malformed position is an unreadable
    checkpoint (moved aside), a changed order a configuration error (ValueError)."""
    from retinanet_jax.data import pipeline

    def check(restored, step):
        try:
            where = f'{manager.directory}/{step}/data'
            pipeline.check_position(restored['data'], order, step, where)
        except pipeline.CorruptPosition as e:
            raise checkpoint.UnreadableCheckpoint(str(e)) from None

    return checkpoint.restore_newest_readable(manager, abstract, data=True, check=check)


def bad_records_file(workdir: Path) -> Path:
    """Where data.on_bad_record='skip' lists the records it replaced (one file per process:
    each reads its own share)."""
    k = jax.process_index()
    return workdir / ('bad_records.json' if jax.process_count() == 1 else f'bad_records.{k}.json')


def write_summary(workdir: Path, summary: dict, evaluated: str) -> None:
    """metrics.json and the final table (process 0)."""
    if jax.process_index() == 0:
        (workdir / 'metrics.json').write_text(json.dumps(summary, indent=1))
        print(f'final evaluation ({evaluated}):')
        print(coco_metrics.format_table(summary))
        print(f'wrote {workdir}/metrics.json')
