"""The no-download demo: a small RetinaNet trained from scratch on synthetic `shapes`, on a CPU.

  python train.py --config=configs/shapes.py --workdir=/tmp/shapes

ResNet-18 trunk with trainable batch norm (nothing frozen: there are no pretrained weights), a
64-wide FPN and two-conv heads with GroupNorm, 128x128 images, anchors one octave smaller than
the paper's, AdamW at 2e-3 with warmup and cosine decay, batch 16, 520 steps (~7.5 minutes on
2 cores). Override anything from the command line, e.g. --config.train_steps=200.

How it was chosen (mAP@[.5:.95] on the 200 validation images, 500 steps unless stated):
no norm 0.685 (700 steps, the old recipe); batch norm 0.660 at lr 1e-3 with the paper's
anchors; anchors 16-256 0.711; + GIoU box loss 0.705; lr 2e-3 0.749; lr 4e-3 0.733; lr 3e-3
with batch norm in the FPN 0.736; four-conv heads with 50 warmup steps 0.707; batch 8 for
1,000 steps 0.756 (11 minutes on a busy machine, not re-measured quiet). BENCHMARKS.md
has the race against torchvision.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(
        {
            'dataset': 'shapes',
            'options': {'image_size': 128, 'sizes': {'train': 4000, 'validation': 200}},
            'train_split': 'train',
            'eval_split': 'validation',
            # input: worker processes (-1: one per core on a GPU, threads on a CPU; 0: threads)
            # or reading threads (0: 4 per core); see settings.DataConfig
            'read_threads': 0,
            'read_workers': -1,
        }
    )
    c.input = ml_collections.ConfigDict(
        {
            'image_size': (128, 128),
            'short_side': 128,
            'max_side': 128,
            'flip': True,
            'scale_jitter': None,
            'max_boxes': 16,
        }
    )
    c.model = ml_collections.ConfigDict(
        {
            'num_classes': 3,
            'depth': 18,
            'freeze_at': 0,
            'norm': 'batch',
            'fpn_width': 64,
            'fpn_norm': 'none',
            'head_depth': 2,
            'head_group_norm': True,
            'p6_from': 'c5',
            'dtype': 'float32',
        }
    )
    # The paper's anchors, one octave smaller: the shapes are 15-77 pixels across, and the
    # paper's 32-512 pixel anchors would leave the smallest with low-quality matches only.
    c.anchors = ml_collections.ConfigDict(
        {'preset': 'paper', 'sizes': (16.0, 32.0, 64.0, 128.0, 256.0)}
    )
    c.loss = 'paper'
    c.postprocess = ml_collections.ConfigDict({'max_detections': 100})
    # COCO's AP / AR at up to 100 detections an image (dense scenes: more, with as many in
    # postprocess.max_detections), and precision / recall / F1 at an IoU and a score threshold.
    c.evaluation = ml_collections.ConfigDict(
        {'max_detections': (1, 10, 100), 'pr_iou': 0.5, 'pr_score_threshold': 0.3}
    )
    c.optim = ml_collections.ConfigDict(
        {
            'name': 'adamw',
            'lr': 2e-3,
            'momentum': 0.9,
            'weight_decay': 1e-4,
            'schedule': 'cosine',
            'decay_at': (0.67, 0.89),
            'warmup_steps': 100,
            'warmup_factor': 0.01,
            'grad_clip': 1.0,
        }
    )
    # A pretrained detector to fine-tune from (a run, RUN:best, a model directory or a
    # torchvision RetinaNet state dict); '' trains from scratch.
    c.init = ml_collections.ConfigDict({'backbone': '', 'detector': ''})
    c.batch_size = 16
    c.train_steps = 520
    c.log_every = 20
    c.eval_every = 520
    c.checkpoint_every = 260
    c.keep_checkpoints = 2
    # An EMA of the weights (retinanet_jax/training/ema.py): decay 0 is off;
    # e.g. --config.ema.decay=0.9998
    c.ema = ml_collections.ConfigDict({'decay': 0.0, 'warmup_power': 2 / 3})
    # The checkpoint of the best evaluation by this metric in DIR/best (e.g. 'AP'); '': none.
    c.keep_best = ''
    return c
