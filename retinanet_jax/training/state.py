"""The train state: its static structure, a fresh one, an abstract one to restore into, a
backbone from a torchvision file, and a run's resume.

  state = {'model': nnx.State of the model (Params, Frozen weights, BatchStats),
           'optimizer': nnx.State of the nnx.Optimizer (step, optax state of the Params),
           'ema': the model's state averaged (ema.py; only with config.ema.decay > 0)}
with its static structure in a `TrainGraph` (nnx graphdefs), every array replicated on the
('data',) mesh. A resumed run restores into train_graph's abstract state and never initialises
a fresh one (resume_or_create).

A process that builds the same run again (a notebook, a sweep, the tests) reuses the structure
and the jitted initialiser of the first (functools.lru_cache, keyed by what they depend on: the
model, seed, optimiser, schedule length, EMA and mesh), so it neither traces nor lowers them
again; make_train_step and make_predict_step do the same with their programs.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax import checkpoint, compiler_options, sharding
from retinanet_jax import settings as settings_lib
from retinanet_jax.data import input_position
from retinanet_jax.errors import UserError
from retinanet_jax.inference import loading
from retinanet_jax.inference.predictor import eval_graphdef
from retinanet_jax.models import build_retinanet, torchvision_weights
from retinanet_jax.models.transfer import transfer
from retinanet_jax.training import optim


@dataclasses.dataclass(frozen=True)
class TrainGraph:
    """The static structure of a train state: the model's graphdef in training mode (batch
    statistics), in eval mode (running statistics), and the optimizer's."""

    model: nnx.GraphDef
    eval_model: nnx.GraphDef
    optimizer: nnx.GraphDef


def _recipe(settings: settings_lib.Settings) -> tuple:
    """What a run's train state is built from (hashable): model, seed, optimiser, schedule."""
    return settings.model, settings.seed, settings.optim, settings.train_steps


def _build_modules(model_config, seed, optim_config, train_steps):
    """(model, optimizer) of a run, built op by op (inside a trace: jit or eval_shape)."""
    model = build_retinanet(model_config, seed=seed)
    tx = optim.make_optimizer(optim_config, train_steps)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def train_graph(settings: settings_lib.Settings, mesh) -> tuple[TrainGraph, dict]:
    """(graph, abstract state) of a run: the static structure and the shape-dtype structs
    (replicated on the mesh) of its train state, from eval_shape: nothing is computed. A
    resumed run restores into the abstract state; a fresh one calls create_state."""
    return _train_graph(_recipe(settings), settings.ema.enabled, mesh)


@functools.lru_cache(maxsize=4)
def _train_graph(recipe: tuple, ema: bool, mesh) -> tuple[TrainGraph, dict]:
    model, optimizer = nnx.eval_shape(lambda: _build_modules(*recipe))
    model_config = recipe[0]
    graph = TrainGraph(nnx.graphdef(model), eval_graphdef(model_config), nnx.graphdef(optimizer))
    rep = sharding.replicated(mesh)
    state = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
    if ema:
        state['ema'] = state['model']
    return graph, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state
    )


def create_state(
    settings: settings_lib.Settings, mesh, graph: TrainGraph | None = None
) -> tuple[TrainGraph, dict]:
    """(graph, state) of a fresh run, the state created directly as replicated arrays on the
    mesh (one computation, jit with out_shardings). `graph`: the run's train_graph, where the
    caller has it already (building it traces the whole model)."""
    graph = train_graph(settings, mesh)[0] if graph is None else graph
    state = _initializer(_recipe(settings), mesh)()
    return graph, restart_ema(state) if settings.ema.enabled else state


@functools.lru_cache(maxsize=4)
def _initializer(recipe: tuple, mesh):
    """jit() -> a fresh train state (without its EMA), replicated on the mesh."""

    def init():
        model, optimizer = _build_modules(*recipe)
        return {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}

    return jax.jit(
        init, out_shardings=sharding.replicated(mesh), compiler_options=compiler_options.run_once()
    )


@jax.jit
def _copy(tree):
    """Fresh buffers holding the same values (one program, not one per array shape)."""
    return jax.tree.map(jnp.copy, tree)


def restart_ema(state: dict) -> dict:
    """The state with its EMA set to a copy of the model's weights (fresh arrays: the train
    step donates the state, so the two must not share buffers)."""
    return {**state, 'ema': _copy(state['model'])}


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
        raise UserError(f'config.init.backbone={path}: {e}') from None
    rep = sharding.replicated(mesh)
    model_state = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), nnx.state(model)
    )
    state = {**state, 'model': model_state}
    return restart_ema(state) if 'ema' in state else state


def init_detector(graph: TrainGraph, state: dict, path: str, mesh, names) -> dict:
    """A train state whose model holds a pretrained detector's weights (models/transfer.py:
    every tensor whose name and shape match; the rows of the classes named in both, `names`
    being this run's classes), with one line on what was not loaded."""
    model = nnx.merge(graph.model, state['model'])
    try:
        source, source_names = loading.load_detector(path)
    except UserError as e:
        raise UserError(f'config.init.detector={path}: {e}') from None
    not_loaded = transfer(model, source, source_names, tuple(names))
    total = len(nnx.to_flat_state(nnx.state(model)))
    what = '; '.join(not_loaded) if not_loaded else 'nothing'
    print(
        f'detector initialised from {path}: {total - len(not_loaded)} of {total} tensors '
        f'loaded whole; not loaded: {what}',
        flush=True,
    )
    rep = sharding.replicated(mesh)
    model_state = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), nnx.state(model)
    )
    state = {**state, 'model': model_state}
    return restart_ema(state) if 'ema' in state else state


def resume_or_create(settings: settings_lib.Settings, mesh, manager, order: dict, names=()):
    """(graph, state, step): the newest checkpoint of the run that restores (restore_newest),
    else a fresh state (with the backbone of config.init.backbone, or the detector of
    config.init.detector; `names`: this run's classes)."""
    graph, abstract = train_graph(settings, mesh)  # a resumed run never initialises a fresh state
    restored, start_step = restore_newest(manager, abstract, order)
    if restored is not None:
        print(f'resumed from {manager.directory} at step {start_step}', flush=True)
        return graph, {k: restored[k] for k in abstract}, start_step
    graph, state = create_state(settings, mesh, graph)
    if settings.init_backbone:
        state = init_backbone(graph, state, settings.init_backbone, mesh)
        print(f'backbone initialised from {settings.init_backbone}')
    if settings.init_detector:
        state = init_detector(graph, state, settings.init_detector, mesh, names)
    return graph, state, 0


def restore_newest(manager, abstract: dict, order: dict) -> tuple[dict | None, int]:
    """checkpoint.restore_newest_readable of a run's train state, its input position checked
    against this run's `order` (input_position.order_of): a malformed position is an unreadable
    checkpoint (moved aside), a changed order a configuration error (ValueError)."""

    def check(restored, step):
        try:
            where = f'{manager.directory}/{step}/data'
            input_position.check_position(restored['data'], order, step, where)
        except input_position.CorruptPosition as e:
            raise checkpoint.UnreadableCheckpoint(str(e)) from None

    return checkpoint.restore_newest_readable(manager, abstract, data=True, check=check)
