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
  default_config()      every key of a run's config, with its default (the dataclasses'):
                        what configs/*.py start from, so `--config.key=value` reaches any key

Every error names the config key at fault ("config.model.norm must be one of ..."); unknown
keys are refused with the known ones listed. An unset key (None, ml_collections' placeholder)
takes its default; in `anchors` and `loss`, the preset's value.
"""

import dataclasses
import json
import os
import typing
from typing import Any

import ml_collections
from ml_collections import config_dict

from retinanet_jax.data import sources
from retinanet_jax.data.bad_records import ON_BAD_RECORD
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.errors import UserError
from retinanet_jax.evaluation.coco_metrics import EvaluationConfig
from retinanet_jax.models import ModelConfig
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops.anchors import AnchorConfig
from retinanet_jax.ops.losses import LossConfig
from retinanet_jax.ops.matching import MatcherConfig
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
    if isinstance(c['data'], dict) and 'dataset' not in c['data']:
        raise UserError('config.data.dataset is not set: name a source (data/sources.py)')
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
    input_config = _section(InputConfig, 'input', {**c.get('input', {}), 'seed': seed})
    for key in ('image_size', 'crop_size'):
        if getattr(input_config, key) is not None:
            try:
                anchor_lib.check_image_size(getattr(input_config, key))
            except UserError as e:
                raise UserError(f'config.input.{key}: {e}') from None
    return Settings(
        model=model,
        anchors=anchors,
        loss=_preset(LossConfig, 'loss', c.get('loss', 'paper'), LOSS_PRESETS),
        input=input_config,
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
    """ConfigDict / FrozenConfigDict -> plain dicts, recursively, without their unset keys
    (None: ml_collections' placeholders), which take their defaults."""
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
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
    matcher = changes.get('matcher')
    if isinstance(matcher, dict):  # loss.matcher: the preset's, changed
        known = {f.name for f in dataclasses.fields(MatcherConfig)}
        if set(matcher) - known:
            unknown = sorted(set(matcher) - known)
            raise UserError(
                f'config.{name}.matcher has unknown keys {unknown}; known: {sorted(known)}'
            )
    try:
        if isinstance(matcher, dict):
            changes['matcher'] = dataclasses.replace(base.matcher, **matcher)
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as e:  # UserError included: the key named as configs name it
        message = str(e).replace('MatcherConfig', f'config.{name}.matcher')
        raise UserError(message.replace(f'{cls.__name__}', f'config.{name}')) from None


def to_json(config) -> str:
    """The config as JSON, as written to a run's config.json and read back by from_config."""
    return json.dumps(_plain(config), indent=1)


def default_config() -> ml_collections.ConfigDict:
    """Every key a run's config takes, with its default: the settings dataclasses' own (the one
    place defaults live). Unset (a typed placeholder, None) where a config must give it
    (data.dataset, batch_size, train_steps) and, in `anchors` and `loss`, where the preset
    (`preset`, 'paper' by default) decides. configs/*.py start from it and set what differs;
    `--config.key=value` reaches every key of every config."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    for cls, name in ((ModelConfig, 'model'), (InputConfig, 'input')):
        c[name] = _defaults(cls, skip=('seed',))
    c.anchors = {'preset': 'paper', **_unset(AnchorConfig.paper())}
    c.loss = {'preset': 'paper', **_unset(LossConfig.paper())}
    for cls, name in (
        (PostprocessConfig, 'postprocess'),
        (OptimConfig, 'optim'),
        (EvaluationConfig, 'evaluation'),
        (EmaConfig, 'ema'),
    ):
        c[name] = _defaults(cls)
    c.data = _defaults(DataConfig)
    c.data.dataset = config_dict.placeholder(str)
    c.init = {'backbone': '', 'detector': ''}
    c.batch_size = config_dict.placeholder(int)
    c.train_steps = config_dict.placeholder(int)
    for f in dataclasses.fields(Settings):
        if f.default is not dataclasses.MISSING and not f.name.startswith('init_'):
            c[f.name] = f.default
    return c


def _defaults(cls, skip=()) -> ml_collections.ConfigDict:
    """A dataclass's fields with their defaults (None ones as typed placeholders)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.init is False:
            continue
        if f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        elif f.default is None:  # `T | None`: a placeholder of type T
            kind = next(t for t in typing.get_args(f.type) if t is not type(None))
            values[f.name] = config_dict.placeholder(typing.get_origin(kind) or kind)
        elif f.default is not dataclasses.MISSING:
            values[f.name] = f.default
    return ml_collections.ConfigDict(values)


def _unset(preset) -> dict:
    """A preset's fields, each unset (a placeholder of its value's type): the preset decides."""
    values = {}
    for f in dataclasses.fields(preset):
        value = getattr(preset, f.name)
        values[f.name] = (
            _unset(value)
            if dataclasses.is_dataclass(value)
            else config_dict.placeholder(type(value))
        )
    return values
