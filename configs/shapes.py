"""The no-download demo: a small RetinaNet trained from scratch on synthetic `shapes`, on a CPU.

  python train.py --config=configs/shapes.py --workdir=/tmp/shapes

ResNet-18 trunk with trainable batch norm (nothing frozen: there are no pretrained weights), a
64-wide FPN and two-conv heads with GroupNorm, 128x128 images, anchors one octave smaller than
the paper's, AdamW at 2e-3 with warmup and cosine decay, batch 16, 520 steps: about 7 minutes
on 2 CPU cores, mAP@[.5:.95] 0.74-0.76 (AP50 about 0.97) on the 200 validation images.
Override anything from the command line, e.g. --config.train_steps=200.

How it was chosen (mAP@[.5:.95] on the 200 validation images, 500 steps unless stated):
no norm 0.685 (700 steps, the old recipe); batch norm 0.660 at lr 1e-3 with the paper's
anchors; anchors 16-256 0.711; + GIoU box loss 0.705; lr 2e-3 0.749; lr 4e-3 0.733; lr 3e-3
with batch norm in the FPN 0.736; four-conv heads with 50 warmup steps 0.707; batch 8 for
1,000 steps 0.756 (11 minutes on a busy machine, not re-measured quiet). BENCHMARKS.md
has the race against torchvision.
"""

from retinanet_jax.settings import default_config


def get_config():
    c = default_config()  # every key at its default (settings.default_config); what differs:
    c.data.dataset = 'shapes'
    c.data.options = {'image_size': 128, 'sizes': {'train': 4000, 'validation': 200}}
    c.input.update(image_size=(128, 128), short_side=128, max_side=128, max_boxes=16)
    c.model.update(
        num_classes=3,
        depth=18,
        freeze_at=0,  # nothing frozen: there are no pretrained weights
        norm='batch',
        fpn_width=64,
        head_depth=2,
        head_group_norm=True,
    )
    # The paper's anchors, one octave smaller: the shapes are 15-77 pixels across, and the
    # paper's 32-512 pixel anchors would leave the smallest with low-quality matches only.
    c.anchors.sizes = (16.0, 32.0, 64.0, 128.0, 256.0)
    c.optim.update(
        name='adamw',
        lr=2e-3,
        schedule='cosine',
        warmup_steps=100,
        warmup_factor=0.01,
        grad_clip=1.0,
        decay_at=(0.67, 0.89),  # unused by the cosine schedule; kept as the demo always had it
    )
    c.batch_size = 16
    c.train_steps = 520
    c.log_every = 20
    c.eval_every = 520
    c.checkpoint_every = 260
    c.keep_checkpoints = 2
    return c
