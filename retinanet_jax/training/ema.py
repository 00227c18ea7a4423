"""An exponential moving average (EMA) of the model's weights, kept in the train state.

  config.ema = {'decay': 0.9998, 'warmup_power': 2 / 3}     # decay 0 (the default): no EMA
  state['ema']  the model's nnx.State (Params, Frozen weights, BatchStats), averaged
  ema_decay(config, updates) -> the decay used after `updates` optimiser updates
  update_ema(ema, model, decay) -> decay * ema + (1 - decay) * model, leaf by leaf

As timm's ModelEmaV3 and mmdetection's EMAHook: every floating leaf of the model state is
averaged (the batch-norm running statistics too; frozen weights do not change, so neither does
their average), after each optimiser update, inside the jitted train step (step.py). The
warm-up follows timm's: decay_t = min(decay, 1 - (1 + t) ** -warmup_power) with t the number of
updates before this one, so the first update copies the weights (t = 0: decay 0) and the
average forgets its random initialisation within the first few hundred steps; warmup_power 0
uses `decay` from the first update on. Evaluation reports the raw and the EMA weights; predict,
evaluate and export take the EMA weights of a run that has them (inference/loading.py).
"""

import dataclasses

import jax
import jax.numpy as jnp

from retinanet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    decay: float = 0.0  # 0: no EMA; else in (0, 1), e.g. 0.9998 (detectron2 / d2go's default)
    warmup_power: float = 2 / 3  # timm's warm-up exponent; 0: no warm-up

    def __post_init__(self):
        if not 0 <= self.decay < 1:
            raise UserError(f'EmaConfig.decay must be in [0, 1) (0: off), got {self.decay!r}')
        if self.warmup_power < 0:
            raise UserError(f'EmaConfig.warmup_power must be >= 0, got {self.warmup_power!r}')

    @property
    def enabled(self) -> bool:
        return self.decay > 0


def ema_decay(config: EmaConfig, updates: jax.Array) -> jax.Array:
    """The decay of the update that follows `updates` earlier ones (int scalar), float32."""
    t = jnp.asarray(updates, jnp.float32)
    if config.warmup_power == 0:
        return jnp.float32(config.decay)
    warm = 1.0 - (1.0 + t) ** -config.warmup_power
    return jnp.minimum(jnp.float32(config.decay), warm)


def update_ema(ema, model, decay: jax.Array):
    """decay * ema + (1 - decay) * model for each floating leaf (others: the model's)."""

    def one(average, value):
        if not jnp.issubdtype(value.dtype, jnp.floating):
            return value
        d = decay.astype(value.dtype)
        return d * average + (1 - d) * value

    return jax.tree.map(one, ema, model)
