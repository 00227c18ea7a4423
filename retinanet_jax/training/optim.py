"""The optimiser and its learning-rate schedule.

  make_schedule(OptimConfig, train_steps) -> optax.Schedule
  make_optimizer(OptimConfig, train_steps) -> optax.GradientTransformation

Schedules: linear warmup from lr * warmup_factor over warmup_steps, then either 10x drops at
the fractions `decay_at` of train_steps ('steps', the paper's) or cosine decay to 0 ('cosine').
Optimisers: SGD with momentum (the paper) or AdamW. Weight decay applies to kernels only
(arrays of rank > 1), never to biases or normalisation scales, as detectron2 and torchvision's
reference scripts do. `grad_clip` > 0 clips the global gradient norm first.
"""

import dataclasses
from typing import Literal

import jax
import optax

from retinanet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: Literal['sgd', 'adamw'] = 'sgd'
    lr: float = 0.01
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    schedule: Literal['steps', 'cosine'] = 'steps'
    decay_at: tuple[float, ...] = (60 / 90, 80 / 90)  # fractions of train_steps ('steps')
    warmup_steps: int = 1000
    warmup_factor: float = 0.001
    grad_clip: float = 0.0  # 0: no clipping

    def __post_init__(self):
        if self.name not in ('sgd', 'adamw'):
            raise UserError(f"OptimConfig.name must be 'sgd' or 'adamw', got {self.name!r}")
        if self.schedule not in ('steps', 'cosine'):
            raise UserError(
                f"OptimConfig.schedule must be 'steps' or 'cosine', got {self.schedule!r}"
            )
        if self.lr <= 0:
            raise UserError(f'OptimConfig.lr must be > 0, got {self.lr}')
        if self.warmup_steps < 0:
            raise UserError(f'OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps}')
        if any(not 0 < b <= 1 for b in self.decay_at):
            raise UserError(f'OptimConfig.decay_at must be fractions in (0, 1]: {self.decay_at}')


def make_schedule(config: OptimConfig, train_steps: int) -> optax.Schedule:
    """Linear warmup from lr * warmup_factor, then 10x drops ('steps') or cosine decay."""
    c = config
    if c.schedule == 'steps':
        # join_schedules hands the decay schedule (step - warmup_steps).
        boundaries = {round(b * train_steps) - c.warmup_steps: 0.1 for b in c.decay_at}
        decay = optax.piecewise_constant_schedule(c.lr, boundaries)
    else:
        decay = optax.cosine_decay_schedule(c.lr, max(train_steps - c.warmup_steps, 1))
    warmup = optax.linear_schedule(c.lr * c.warmup_factor, c.lr, max(c.warmup_steps, 1))
    return optax.join_schedules([warmup, decay], [c.warmup_steps])


def make_optimizer(config: OptimConfig, train_steps: int) -> optax.GradientTransformation:
    """SGD with momentum or AdamW on `make_schedule`; weight decay on kernels only."""
    c = config
    schedule = make_schedule(c, train_steps)

    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim > 1, params)  # kernels only

    if c.name == 'sgd':
        tx = optax.chain(
            optax.add_decayed_weights(c.weight_decay, decay_mask),
            optax.sgd(schedule, momentum=c.momentum),
        )
    else:
        tx = optax.adamw(schedule, weight_decay=c.weight_decay, mask=decay_mask)
    if c.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(c.grad_clip), tx)
    return tx
