"""ema.py: the decay schedule (timm's warm-up), the average's arithmetic, its settings; the
train step's EMA (a run: tests/test_train.py; exact resume: the SIGKILL test there)."""

import jax.numpy as jnp
import numpy as np
import pytest

from retinanet_jax.training.ema import EmaConfig, ema_decay, update_ema


def test_decay_warms_up_as_timm_and_is_capped():
    config = EmaConfig(decay=0.999, warmup_power=2 / 3)
    got = [float(ema_decay(config, t)) for t in (0, 1, 7, 10**6)]
    # timm ModelEmaV3.get_decay: 1 - (1 + t / gamma) ** -power, gamma 1; capped at `decay`.
    want = [0.0, 1 - 2 ** (-2 / 3), 1 - 8 ** (-2 / 3), 0.999]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(ema_decay(EmaConfig(decay=0.9, warmup_power=0), 0)) == pytest.approx(0.9)


def test_update_averages_floating_leaves_and_keeps_the_others():
    ema = {'w': jnp.array([1.0, 3.0]), 'n': jnp.array(5, jnp.int32), 'h': jnp.ones(2, jnp.bfloat16)}
    model = {
        'w': jnp.array([3.0, 7.0]),
        'n': jnp.array(6, jnp.int32),
        'h': jnp.zeros(2, jnp.bfloat16),
    }
    out = update_ema(ema, model, jnp.float32(0.75))
    np.testing.assert_allclose(out['w'], [1.5, 4.0])  # 0.75 * ema + 0.25 * model
    assert out['n'] == 6 and out['h'].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out['h'], np.float32), [0.75, 0.75])
    first = update_ema(ema, model, ema_decay(EmaConfig(decay=0.99), 0))  # the first: a copy
    np.testing.assert_array_equal(first['w'], model['w'])


def test_bad_settings_name_the_field():
    assert not EmaConfig().enabled and EmaConfig(decay=0.5).enabled
    with pytest.raises(ValueError, match=r'EmaConfig\.decay must be in \[0, 1\)'):
        EmaConfig(decay=1.0)
    with pytest.raises(ValueError, match=r'EmaConfig\.warmup_power must be >= 0'):
        EmaConfig(decay=0.5, warmup_power=-1)
