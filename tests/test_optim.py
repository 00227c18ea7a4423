"""optim.py: the learning-rate schedules, golden values."""

import numpy as np

from configs import smoke
from retinanet_jax import settings
from retinanet_jax.training import optim


def test_schedule_golden():
    config = smoke.get_config()
    config.optim.update(
        schedule='steps', lr=0.01, warmup_steps=10, warmup_factor=0.1, decay_at=(2 / 3, 8 / 9)
    )
    config.train_steps = 90
    schedule = optim.make_schedule(settings.from_config(config).optim, config.train_steps)
    got = [float(schedule(s)) for s in (0, 5, 10, 59, 60, 79, 80, 89)]
    np.testing.assert_allclose(got, [1e-3, 5.5e-3, 1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    config.optim.schedule = 'cosine'
    schedule = optim.make_schedule(settings.from_config(config).optim, config.train_steps)
    np.testing.assert_allclose([float(schedule(10)), float(schedule(90))], [1e-2, 0.0], atol=1e-9)
