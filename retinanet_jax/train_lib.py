"""Training and evaluation: config -> model, optimizer, sharded steps, checkpoints, metrics.

`train_and_evaluate(config, workdir)` is what `python train.py --config=...` runs. The config
(an ml_collections ConfigDict, see configs/) is read here and nowhere else:
  config.data      dataset name + source options, splits; optional eval_dataset / eval_options
  config.input     pipeline.InputConfig fields
  config.model     ModelConfig fields; config.anchors / config.loss: preset names
  config.init      optional: backbone = a torchvision ImageNet ResNet state dict file
  config.optim     optimizer; config.postprocess: PostprocessConfig fields
  config.batch_size (global), config.train_steps, config.seed, logging / eval / checkpoint periods
The train step is one jax.jit over a ('data',) mesh: state replicated, batch split, state donated;
the loss normaliser sums positives over the global batch.
"""

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from retinanet_jax import anchors as anchor_lib
from retinanet_jax import evaluation, losses, postprocess, sharding
from retinanet_jax.models import ModelConfig, build_model
from retinanet_jax.normalization import normalize_images

PRESETS = ('paper', 'torchvision', 'pytorch_retinanet')


def anchor_config(config) -> anchor_lib.AnchorConfig:
    if config.anchors not in PRESETS:
        raise ValueError(f'config.anchors must be one of {PRESETS}, got {config.anchors!r}')
    return getattr(anchor_lib.AnchorConfig, config.anchors)()


def loss_config(config) -> losses.LossConfig:
    if config.loss not in (*PRESETS, 'torchvision_v2'):
        raise ValueError(f'config.loss must be a LossConfig preset name, got {config.loss!r}')
    return getattr(losses.LossConfig, config.loss)()


def make_schedule(config) -> optax.Schedule:
    """Linear warmup from lr * warmup_factor, then 10x drops ('steps') or cosine decay."""
    o = config.optim
    if o.schedule == 'steps':
        # join_schedules hands the decay schedule (step - warmup_steps).
        boundaries = {round(b * config.train_steps) - o.warmup_steps: 0.1 for b in o.decay_at}
        decay = optax.piecewise_constant_schedule(o.lr, boundaries)
    elif o.schedule == 'cosine':
        decay = optax.cosine_decay_schedule(o.lr, max(config.train_steps - o.warmup_steps, 1))
    else:
        raise ValueError(f"config.optim.schedule must be 'steps' or 'cosine', got {o.schedule!r}")
    warmup = optax.linear_schedule(o.lr * o.warmup_factor, o.lr, max(o.warmup_steps, 1))
    return optax.join_schedules([warmup, decay], [o.warmup_steps])


def make_optimizer(config) -> optax.GradientTransformation:
    """SGD with momentum (the paper) or AdamW on `make_schedule`; weight decay on kernels."""
    o = config.optim
    schedule = make_schedule(config)

    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim > 1, params)  # kernels only

    if o.name == 'sgd':
        tx = optax.chain(
            optax.add_decayed_weights(o.weight_decay, decay_mask),
            optax.sgd(schedule, momentum=o.momentum),
        )
    elif o.name == 'adamw':
        tx = optax.adamw(schedule, weight_decay=o.weight_decay, mask=decay_mask)
    else:
        raise ValueError(f"config.optim.name must be 'sgd' or 'adamw', got {o.name!r}")
    if o.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
    return tx


def create_state(config, mesh):
    """(graphdef, state) of (model, optimizer), the state created directly as replicated arrays
    on the mesh (jit with out_shardings; shapes come from eval_shape, nothing is built twice)."""
    model_config = ModelConfig(**config.model)

    def build():
        model = build_model(model_config, seed=config.seed)
        return model, nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)

    graphdef = nnx.graphdef(nnx.eval_shape(build))
    state = jax.jit(lambda: nnx.state(build()), out_shardings=sharding.replicated(mesh))()
    return graphdef, state


def init_backbone(graphdef, state, path: str, mesh):
    """A train state whose backbone holds a torchvision ImageNet ResNet state dict file
    (.pth / .safetensors / .npz, see convert.load_state_dict); errors name the file."""
    from retinanet_jax import convert

    model, optimizer = nnx.merge(graphdef, state)
    try:
        convert.load_resnet_from_torchvision(model, convert.load_state_dict(path))
    except ValueError as e:
        raise ValueError(f'config.init.backbone={path}: {e}') from None
    rep = sharding.replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)),
        nnx.state((model, optimizer)),
    )


def model_graphdef(config):
    """The graphdef of the model alone (for make_predict_step), built from shapes only."""
    return nnx.graphdef(nnx.eval_shape(lambda: build_model(ModelConfig(**config.model))))


def model_state(state):
    """The model's part of a (model, optimizer) train state."""
    return state[0]


def make_train_step(graphdef, anchors: np.ndarray, config, mesh):
    """jit(state, batch) -> (state, metrics); state donated, batch split over 'data'."""
    loss_cfg = loss_config(config)
    schedule = make_schedule(config)
    anchors = jnp.asarray(anchors)

    def step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        learning_rate = schedule(optimizer.step[...])  # the rate this update uses

        def loss_fn(model):
            out = model(normalize_images(batch['image']))
            return losses.detection_loss(
                out['cls_logits'],
                out['box_deltas'],
                anchors,
                batch['gt_boxes'],
                batch['gt_labels'],
                loss_cfg,
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
        return nnx.state((model, optimizer)), metrics

    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, split), out_shardings=(rep, rep), donate_argnums=0)


def make_predict_step(graphdef, image_hw: tuple[int, int], config, mesh):
    """jit(model_state, batch) -> detections in original image pixels (see postprocess.py).

    `graphdef` / model_state are the model's alone (`model_state(state)` of a train state).
    batch: 'image' uint8 [B, H, W, 3], 'image_size' int32 [B, 2], 'scale' float32 [B, 2]."""
    anchor_cfg = anchor_config(config)
    level_sizes = anchor_lib.level_sizes(image_hw, anchor_cfg)
    post_cfg = postprocess.PostprocessConfig(**config.postprocess)
    anchors = jnp.asarray(anchor_lib.generate_anchors(image_hw, anchor_cfg))

    def predict(state, batch):
        model = nnx.merge(graphdef, state)
        out = model(normalize_images(batch['image']))
        dets = postprocess.postprocess(
            out['cls_logits'],
            out['box_deltas'],
            anchors,
            batch['image_size'],
            level_sizes,
            post_cfg,
        )
        dets['boxes'] = postprocess.boxes_to_original(dets['boxes'], batch['scale'])
        return dets

    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(predict, in_shardings=(rep, split), out_shardings=split)


def evaluate(predict, state, eval_ds, num_batches, evaluator, mesh, progress=None) -> dict:
    """Runs `predict` (make_predict_step) with the model `state` over the evaluation dataset and
    returns the evaluator's metrics."""
    evaluator.reset()
    batches = eval_ds.as_numpy_iterator()
    if progress is not None:
        batches = progress(batches, total=num_batches, desc='eval', leave=False)
    for batch in batches:
        dets = sharding.to_local(predict(state, sharding.to_global(batch, mesh)), mesh)
        evaluator.add_batch(dets, batch)
    return evaluator.evaluate()


# --------------------------------------------------------------------------- orchestration


def _data(config):
    from retinanet_jax.data import pipeline, sources

    source = sources.make_source(config.data.dataset, **_plain(config.data.get('options', {})))
    input_config = pipeline.InputConfig(**{**config.input, 'seed': config.seed})
    if source.label_map.num_classes != config.model.num_classes:
        raise ValueError(
            f'config.model.num_classes is {config.model.num_classes} but dataset '
            f'{config.data.dataset!r} has {source.label_map.num_classes} classes'
        )
    return source, input_config, pipeline


def _plain(options) -> dict:
    """Source options as plain Python (ConfigDict -> dict, recursively)."""
    return options.to_dict() if hasattr(options, 'to_dict') else dict(options)


def eval_source(config, source):
    """The source evaluated on: config.data.eval_dataset (with eval_options) where given,
    e.g. VOC 2007 test for a model trained on VOC 2007+2012; else the training source."""
    from retinanet_jax.data import sources

    name = config.data.get('eval_dataset') or config.data.dataset
    if name == config.data.dataset:
        return source
    evaluated = sources.make_source(name, **_plain(config.data.get('eval_options', {})))
    if evaluated.label_map.names != source.label_map.names:
        raise ValueError(
            f'config.data.eval_dataset {name!r} has other classes than {config.data.dataset!r}'
        )
    return evaluated


def make_evaluator(source, split: str, detection_label_map=None) -> evaluation.CocoEvaluator:
    """A COCO evaluator whose ground truth is the whole of `split` of `source` (on every
    process: `evaluate` gathers every process's detections before scoring them)."""
    raw = source.raw(split).as_numpy_iterator()
    # VOC sources also get PASCAL VOC's AP50: 11-point on VOC 2007 (its convention), else area.
    name = getattr(source, 'name', '')
    voc = ('11_point' if name == 'voc/2007' else 'area') if name.startswith('voc') else None
    return evaluation.CocoEvaluator(
        evaluation.coco_ground_truth(raw, source.label_map),
        source.label_map,
        detection_label_map,
        voc_ap50=voc,
    )


def _checkpoints(workdir: Path, config=None) -> ocp.CheckpointManager:
    """The run's checkpoint manager (read-only use: config None)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints if config else None, create=config is not None
    )
    return ocp.CheckpointManager(
        workdir / 'checkpoints', options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def _restore(manager, state, workdir):
    """The latest checkpoint into the sharded abstract `state`, or None for a fresh run.

    The stored shapes are compared with the state's first, from the checkpoint's metadata:
    a checkpoint of another model is refused with the differences named, before any array
    is read."""
    step = manager.latest_step()
    if step is None:
        return None, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    stored, wanted = _shapes(manager.item_metadata(step)), _shapes(abstract)
    if stored != wanted:
        differences = sorted(
            f'{k}: checkpoint {stored.get(k, "absent")}, model {wanted.get(k, "absent")}'
            for k in set(stored) | set(wanted)
            if stored.get(k) != wanted.get(k)
        )
        raise ValueError(
            f'{workdir}/checkpoints/{step} does not match this config (another model?); use '
            f'a new --workdir. {len(differences)} difference(s), e.g. {differences[:3]}'
        )
    return manager.restore(step, args=ocp.args.StandardRestore(abstract)), step


def _shapes(tree) -> dict[str, tuple]:
    """{'0/backbone/conv1/kernel': shape} of a state tree or of orbax's metadata of one."""

    def name(path):
        keys = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
        return '/'.join(k for k in keys if k != 'value')

    return {name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (resuming from `workdir` if it holds checkpoints), evaluates, returns metrics."""
    import tensorflow as tf
    from tqdm import tqdm

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    local_batch = sharding.local_batch_size(config.batch_size)
    source, input_config, pipeline = _data(config)
    image_hw = tuple(input_config.image_size)
    anchors = np.asarray(anchor_lib.generate_anchors(image_hw, anchor_config(config)))

    # ---------------------------------------------------------------- state, maybe resumed
    graphdef, state = create_state(config, mesh)
    manager = _checkpoints(workdir, config)
    restored, start_step = _restore(manager, state, workdir)
    if restored is not None:
        state = restored
        print(f'resumed from {workdir}/checkpoints at step {start_step}')
    elif config.get('init', {}).get('backbone'):
        state = init_backbone(graphdef, state, config.init.backbone, mesh)
        print(f'backbone initialised from {config.init.backbone}')
    if jax.process_index() == 0:  # only once the workdir is known to be this run's
        (workdir / 'config.json').write_text(config.to_json_best_effort(indent=1))
    train_step = make_train_step(graphdef, anchors, config, mesh)
    predict = make_predict_step(model_graphdef(config), image_hw, config, mesh)

    # ---------------------------------------------------------------- data
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_ds = pipeline.train_dataset(
        source, input_config, local_batch, split=config.data.train_split, **process
    )
    # The pipeline is deterministic for a seed: skipping the batches already used resumes the
    # input exactly where the interrupted run stopped.
    train_iter = train_ds.skip(start_step).as_numpy_iterator()
    evaluated = eval_source(config, source)
    eval_ds, eval_batches = pipeline.eval_dataset(
        evaluated, input_config, local_batch, split=config.data.eval_split, **process
    )
    evaluator = make_evaluator(evaluated, config.data.eval_split)
    writer = (
        tf.summary.create_file_writer(str(workdir / 'logs')) if jax.process_index() == 0 else None
    )

    # ---------------------------------------------------------------- loop
    history, start, last_saved = {}, time.time(), start_step
    bar = tqdm(
        range(start_step, config.train_steps),
        initial=start_step,
        total=config.train_steps,
        desc='train',
        disable=jax.process_index() != 0,
    )
    for step in bar:
        batch = sharding.to_global(next(train_iter), mesh)
        state, metrics = train_step(state, batch)
        done = step + 1
        if done % config.log_every == 0 or done == config.train_steps:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(metrics['loss']):
                raise FloatingPointError(
                    f'non-finite loss {metrics["loss"]} at step {done}; last good checkpoint: '
                    f'{workdir}/checkpoints/{last_saved or "none"}'
                )
            metrics['images_per_second'] = (
                config.batch_size * (done - start_step) / (time.time() - start)
            )
            bar.set_postfix(
                loss=f'{metrics["loss"]:.3f}', pos=f'{metrics["positives_per_image"]:.0f}'
            )
            _write(writer, done, metrics)
        if done % config.checkpoint_every == 0 or done == config.train_steps:
            manager.save(done, args=ocp.args.StandardSave(state))
            manager.wait_until_finished()
            last_saved = done
        if done % config.eval_every == 0 or done == config.train_steps:
            history[done] = evaluate(
                predict, model_state(state), eval_ds, eval_batches, evaluator, mesh, tqdm
            )
            _write(writer, done, {f'eval/{k}': v for k, v in history[done].items()})
            tqdm.write(f'step {done} eval:\n{evaluation.format_table(history[done])}')
    manager.close()

    # ---------------------------------------------------------------- summary
    final = history.get(config.train_steps) or evaluate(
        predict, model_state(state), eval_ds, eval_batches, evaluator, mesh
    )
    summary = {'step': config.train_steps, 'wall_seconds': time.time() - start, **final}
    if jax.process_index() == 0:
        (workdir / 'metrics.json').write_text(json.dumps(summary, indent=1))
        evaluated_on = config.data.get('eval_dataset') or config.data.dataset
        print(f'final evaluation ({evaluated_on} {config.data.eval_split}):')
        print(evaluation.format_table(final))
        print(f'wrote {workdir}/metrics.json')
    return summary


def _write(writer, step, metrics):
    if writer is None:
        return
    import tensorflow as tf

    with writer.as_default(step=step):
        for k, v in metrics.items():
            tf.summary.scalar(k, v)
    writer.flush()
