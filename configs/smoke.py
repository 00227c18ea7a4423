"""A tiny configuration for tests: a few steps of a very small model on 64x64 `shapes`.

python train.py --config=configs/smoke.py --workdir=/tmp/smoke
"""

from configs import shapes


def get_config():
    c = shapes.get_config()
    c.data.options = {'image_size': 64, 'sizes': {'train': 16, 'validation': 4}}
    c.input.image_size = (64, 64)
    c.input.short_side = 64
    c.input.max_side = 64
    c.input.max_boxes = 8
    c.model.fpn_width = 32
    c.model.head_depth = 1
    # Frozen stages, batch norm in the FPN and skipped non-finite steps in every smoke run: the
    # norm-statistics test's train step is then the smoke run's (compiled once, then cached).
    # The stem and layers 1-3 frozen, layer4 trainable batch norm: a gradient through one stage
    # only compiles in 8 s instead of 11 (freeze_at=2) and runs in 0.42 s instead of 0.52.
    c.model.freeze_at = 4
    c.model.fpn_norm = 'batch'
    c.skip_nonfinite = 1
    c.batch_size = 2
    c.train_steps = 4
    c.log_every = 1
    c.eval_every = 4
    c.checkpoint_every = 2
    c.optim.warmup_steps = 1
    c.ema.decay = 0.9  # an EMA of the weights in every smoke run (the tests: exact resume)
    return c
