"""RetinaNet R50-FPN on COCO 2017, the paper's 1x recipe (90k iterations at batch 16).

  python train.py --config=configs/coco.py --workdir=/tmp/coco \
      --config.init.backbone=/path/to/resnet50-0676ba61.pth

COCO must be prepared for tensorflow-datasets (`tfds build coco/2017`, or set
--config.data.options.data_dir). The backbone is a torchvision ImageNet ResNet-50 state dict
(.pth / .safetensors / .npz), loaded through the convert command; without one the
run trains from scratch (and will not reach the paper's numbers).

The recipe: SGD momentum 0.9, lr 0.01 (batch 16), weight decay 1e-4 on kernels, linear warmup
over 1000 iterations from lr/1000, 10x drops at 60k and 80k of 90k iterations, horizontal
flip, stem + res2 and every BatchNorm frozen, P6 from C5, focal loss alpha 0.25 gamma 2,
smooth L1 (beta 0.11), IoU 0.5 / 0.4 matching.

Departures, on purpose: images are resized to a short side of 800 unless the long side would
exceed 1024, then padded to a static 1024x1024 (jit needs static shapes; most COCO images end
at 1024x768, a little under the paper's 800x1067). For the paper's scale set
--config.input.image_size='(1344,1344)' --config.input.max_side=1333 (~1.7x the compute). The
model computes in bfloat16 (parameters, BatchNorm's affine step and the output convolutions in
float32); --config.model.dtype=float32 for the paper's arithmetic.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(
        {
            'dataset': 'coco/2017',
            'options': {'data_dir': config_dict.placeholder(str)},  # tfds data_dir
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
            'image_size': (1024, 1024),
            'short_side': 800,
            'max_side': 1024,
            'flip': True,
            'scale_jitter': None,
            'max_boxes': 100,
        }
    )
    # init.backbone: an ImageNet ResNet state dict; init.detector: a pretrained detector to
    # fine-tune (a torchvision RetinaNet state dict, a model directory, RUN or RUN:best).
    c.init = ml_collections.ConfigDict({'backbone': '', 'detector': ''})
    c.model = ml_collections.ConfigDict(
        {
            'num_classes': 80,
            'depth': 50,
            'freeze_at': 2,
            'norm': 'frozen',
            'fpn_width': 256,
            'fpn_norm': 'none',
            'head_depth': 4,
            'head_group_norm': False,
            'p6_from': 'c5',
            'dtype': 'bfloat16',
        }
    )
    c.anchors = 'paper'
    c.loss = 'paper'
    c.postprocess = ml_collections.ConfigDict({'max_detections': 100})
    # COCO's AP / AR at up to 100 detections an image (dense scenes: more, with as many in
    # postprocess.max_detections), and precision / recall / F1 at an IoU and a score threshold.
    c.evaluation = ml_collections.ConfigDict(
        {'max_detections': (1, 10, 100), 'pr_iou': 0.5, 'pr_score_threshold': 0.3}
    )
    c.optim = ml_collections.ConfigDict(
        {
            'name': 'sgd',
            'lr': 0.01,
            'momentum': 0.9,
            'weight_decay': 1e-4,
            'schedule': 'steps',
            'decay_at': (60 / 90, 80 / 90),
            'warmup_steps': 1000,
            'warmup_factor': 0.001,
            'grad_clip': 0.0,
        }
    )
    c.batch_size = 16
    c.train_steps = 90_000
    c.log_every = 100
    c.eval_every = 10_000
    c.checkpoint_every = 5_000
    c.keep_checkpoints = 3
    # An EMA of the weights (retinanet_jax/training/ema.py): decay 0 is off;
    # e.g. --config.ema.decay=0.9998
    c.ema = ml_collections.ConfigDict({'decay': 0.0, 'warmup_power': 2 / 3})
    # The checkpoint of the best evaluation by this metric in DIR/best (e.g. 'AP'); '': none.
    c.keep_best = ''
    return c
