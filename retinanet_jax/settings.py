"""The one place where a run's config (an ml_collections ConfigDict, see configs/) becomes typed
settings. Everything downstream (train, predict, evaluate, export, bench) takes these objects.

  settings = from_config(config)
  settings.model        models.ModelConfig          config.model
  settings.anchors      anchors.AnchorConfig        config.anchors: a preset name, or a dict
                                                    {'preset': name, field: value, ...}
  settings.loss         losses.LossConfig           config.loss: likewise
  settings.input        data.InputConfig            config.input (its seed: config.seed)
  settings.postprocess  postprocess.PostprocessConfig   config.postprocess
  settings.optim        optim.OptimConfig           config.optim
  settings.evaluation   coco_metrics.EvaluationConfig config.evaluation (optional: COCO's defaults)
  settings.data         DataConfig                  config.data: dataset, options, splits
  settings.batch_size, train_steps, seed, log_every, eval_every, checkpoint_every,
  keep_checkpoints, skip_nonfinite, init_backbone (config.init.backbone), init_detector
  (config.init.detector)
  make_sources(settings) -> (training source, evaluation source), classes checked

Every error names the config key at fault ("config.model.norm must be one of ..."); unknown
keys are refused with the known ones listed.
"""

import dataclasses
import json
import os
from typing import Any

from retinanet_jax.data import sources
from retinanet_jax.data.bad_records import ON_BAD_RECORD
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.errors import UserError
from retinanet_jax.evaluation.coco_metrics import EvaluationConfig
from retinanet_jax.models import ModelConfig
from retinanet_jax.ops.anchors import AnchorConfig
from retinanet_jax.ops.losses import LossConfig
from retinanet_jax.ops.postprocess import PostprocessConfig
from retinanet_jax.training.ema import EmaConfig
from retinanet_jax.training.optim import OptimConfig

ANCHOR_PRESETS = ('paper', 'torchvision', 'pytorch_retinanet')
LOSS_PRESETS = ('paper', 'torchvision', 'torchvision_v2', 'pytorch_retinanet')


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data: a source name (data/sources.py) with its options, and the splits. Evaluation
    uses `eval_dataset` (with `eval_options`) where given, else the training dataset."""

    dataset: str
    options: dict = dataclasses.field(default_factory=dict)
    train_split: str = 'train'
    eval_split: str = 'validation'
    eval_dataset: str | None = None
    eval_options: dict = dataclasses.field(default_factory=dict)
    # A training record that cannot be read mid-run: 'stop' (naming it) or 'skip' (replace it,
    # list it in <workdir>/bad_records.json, stop past max_bad_fraction of the split bad).
    on_bad_record: str = 'stop'
    max_bad_fraction: float = 0.01
    # Threads that read and augment training batches (grain): 0 = 4 per core, at most 16.
    read_threads: int = 0
    # Worker processes that read and augment training batches (grain's mp_prefetch), each on one
    # core, past the GIL; 0: threads in this process (read_threads). -1 (auto, the default): one
    # per core of the host where the model runs on an accelerator and on_bad_record is 'stop';
    # else threads (on a CPU the cores run the model). See `workers_for`.
    read_workers: int = -1

    def __post_init__(self):
        for name, least in (('read_threads', 0), ('read_workers', -1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f'DataConfig.{name} must be an integer >= {least}, got {value!r}')
        if self.read_workers > 0 and self.on_bad_record == 'skip':
            raise UserError(
                "DataConfig.read_workers > 0 needs on_bad_record='stop': the list of skipped "
                'records is kept in this process'
            )
        if self.on_bad_record not in ON_BAD_RECORD:
            raise UserError(
                f'DataConfig.on_bad_record must be one of {ON_BAD_RECORD}, got '
                f'{self.on_bad_record!r}'
            )
        if not 0 <= self.max_bad_fraction <= 1:
            raise UserError(
                f'DataConfig.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction!r}'
            )

    @property
    def evaluated(self) -> str:
        """The name of the dataset evaluated on."""
        return self.eval_dataset or self.dataset

    def workers_for(self, backend: str) -> int:
        """The worker processes a run reads with on `backend` (jax.default_backend()):
        read_workers, or for -1 the cores this process may use (os.sched_getaffinity) on an
        accelerator with on_bad_record 'stop', else 0 (threads)."""
        if self.read_workers >= 0:
            return self.read_workers
        if backend == 'cpu' or self.on_bad_record != 'stop':
            return 0
        return len(os.sched_getaffinity(0))


@dataclasses.dataclass(frozen=True)
class Settings:
    model: ModelConfig
    anchors: AnchorConfig
    loss: LossConfig
    input: InputConfig
    postprocess: PostprocessConfig
    optim: OptimConfig
    data: DataConfig
    batch_size: int
    train_steps: int
    seed: int = 0
    log_every: int = 100
    eval_every: int = 10_000
    checkpoint_every: int = 5_000
    keep_checkpoints: int = 3
    init_backbone: str = ''  # a torchvision ImageNet ResNet state dict file, for fresh runs
    # A pretrained detector to fine-tune, for fresh runs: a torchvision RetinaNet state dict, a
    # model directory or a training run (RUN or RUN:best); see models/transfer.py.
    init_detector: str = ''
    # 0: a non-finite loss or gradient stops the run; N: such updates are skipped (parameters,
    # optimiser state and batch statistics kept), and N + 1 in a row stop it.
    skip_nonfinite: int = 0
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    ema: EmaConfig = dataclasses.field(default_factory=EmaConfig)
    # A metric of the evaluation (e.g. 'AP', 'ema/AP', 'val_loss'): DIR/best keeps the
    # checkpoint of the best evaluation by it ('' : none); `--model=DIR:best` takes it.
    keep_best: str = ''

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.input.image_size)


def from_config(config) -> Settings:
    """Typed settings from a run's ConfigDict (or nested dict); ValueError names the key."""
    c = _plain(config)
    top = {f.name for f in dataclasses.fields(Settings)} - {'init_backbone', 'init_detector'}
    sections = {
        'model',
        'anchors',
        'loss',
        'input',
        'postprocess',
        'optim',
        'data',
        'evaluation',
        'ema',
    }
    unknown = sorted(set(c) - top - {'init'})
    if unknown:
        raise UserError(f'the config has unknown keys {unknown}; known: {sorted(top | {"init"})}')
    missing = sorted(k for k in ('model', 'data', 'batch_size', 'train_steps') if k not in c)
    if missing:
        raise UserError(f'the config lacks {missing}')
    seed = c.get('seed', 0)
    init = c.get('init') or {}
    if set(init) - {'backbone', 'detector'}:
        unknown = sorted(set(init) - {'backbone', 'detector'})
        raise UserError(f'config.init has unknown keys {unknown}; known: backbone, detector')
    if init.get('backbone') and init.get('detector'):
        raise UserError('config.init: give backbone or detector, not both (a detector has one)')
    for key in ('batch_size', 'train_steps', 'log_every', 'eval_every', 'checkpoint_every'):
        if key in c and (not isinstance(c[key], int) or c[key] < 1):
            raise UserError(f'config.{key} must be a positive integer, got {c[key]!r}')
    if not isinstance(c.get('keep_best', ''), str):
        raise UserError(f"config.keep_best must be a metric name or '', got {c['keep_best']!r}")
    skip = c.get('skip_nonfinite', 0)
    if not isinstance(skip, int) or skip < 0:
        raise UserError(f'config.skip_nonfinite must be an integer >= 0, got {skip!r}')
    model = _section(ModelConfig, 'model', c['model'])
    anchors = _preset(AnchorConfig, 'anchors', c.get('anchors', 'paper'), ANCHOR_PRESETS)
    if anchors.num_anchors_per_location != model.num_anchors:
        raise UserError(
            f'config.anchors has {anchors.num_anchors_per_location} anchors per location '
            f'(scales x aspect ratios) but config.model.num_anchors is {model.num_anchors}'
        )
    if anchors.levels != (3, 4, 5, 6, 7):
        raise UserError(
            f'config.anchors levels must be 3..7 (the FPN gives P3-P7), got '
            f'{anchors.min_level}..{anchors.max_level}'
        )
    return Settings(
        model=model,
        anchors=anchors,
        loss=_preset(LossConfig, 'loss', c.get('loss', 'paper'), LOSS_PRESETS),
        input=_section(InputConfig, 'input', {**c.get('input', {}), 'seed': seed}),
        postprocess=_section(PostprocessConfig, 'postprocess', c.get('postprocess', {})),
        optim=_section(OptimConfig, 'optim', c.get('optim', {})),
        data=_section(DataConfig, 'data', c['data']),
        evaluation=_section(EvaluationConfig, 'evaluation', c.get('evaluation', {})),
        ema=_section(EmaConfig, 'ema', c.get('ema', {})),
        init_backbone=init.get('backbone') or '',
        init_detector=init.get('detector') or '',
        **{k: c[k] for k in top - sections if k in c},
    )


def make_sources(settings: Settings):
    """(training source, evaluation source) of settings.data (data/sources.py); they are the
    same object unless config.data.eval_dataset names another. Checks that the model's class
    count and the datasets' agree."""
    d = settings.data
    source = make_source(d.dataset, d.options, 'config.data.options')
    if source.label_map.num_classes != settings.model.num_classes:
        raise UserError(
            f'config.model.num_classes is {settings.model.num_classes} but dataset '
            f'{d.dataset!r} has {source.label_map.num_classes} classes'
        )
    if d.evaluated == d.dataset:
        return source, source
    evaluated = make_source(d.eval_dataset, d.eval_options, 'config.data.eval_options')
    if evaluated.label_map.names != source.label_map.names:
        raise UserError(
            f'config.data.eval_dataset {d.eval_dataset!r} has other classes than {d.dataset!r}'
        )
    return source, evaluated


def make_source(name: str, options, key: str = 'dataset_options'):
    """sources.make_source(name, **options), an option the source does not take (or options
    that are not a dict) named with `key`."""
    if not isinstance(options, dict):
        raise UserError(f'{key} for dataset {name!r} must be a dict of options, got {options!r}')
    try:
        return sources.make_source(name, **options)
    except TypeError as e:
        if 'keyword argument' not in str(e) and 'positional argument' not in str(e):
            raise  # not an option the source does not take: a bug, with its traceback
        raise UserError(f'{key} for dataset {name!r}: {e}') from None


def _plain(value) -> Any:
    """ConfigDict / FrozenConfigDict -> plain dicts, recursively; placeholders (None) dropped
    from option dicts by the sections that take them."""
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def _section(cls, name: str, values):
    """cls(**values), with every error naming config.<name>.<field>."""
    if not isinstance(values, dict):
        raise UserError(f'config.{name} must be a dict of settings, got {values!r}')
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(
            f'config.{name} has unknown keys {unknown}; known: {sorted(fields - {"seed"})}'
        )
    if cls is DataConfig:  # unset placeholders (e.g. data_dir) are not options
        values = {
            k: {o: x for o, x in v.items() if x is not None} if k.endswith('options') else v
            for k, v in values.items()
        }
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        message = str(e).replace(f'{cls.__name__}.', f'config.{name}.')
        if f'config.{name}' not in message:
            message = f'config.{name}: {message}'
        raise UserError(message) from None


def _preset(cls, name: str, value, presets: tuple[str, ...]):
    """A preset by name, or a dict {'preset': name (default 'paper'), field: value, ...} that
    starts from the preset and changes the fields given."""
    changes = {}
    if isinstance(value, dict):
        changes = dict(value)
        value = changes.pop('preset', 'paper')
    if value not in presets:
        raise UserError(f'config.{name} must be one of {presets}, got {value!r}')
    base = getattr(cls, value)()
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise UserError(f'config.{name} has unknown keys {unknown}; known: {sorted(fields)}')
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as e:
        raise UserError(str(e).replace(f'{cls.__name__}', f'config.{name}')) from None


def to_json(config) -> str:
    """The config as JSON, as written to a run's config.json and read back by from_config."""
    return json.dumps(_plain(config), indent=1)
