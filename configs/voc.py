"""RetinaNet R50-FPN on PASCAL VOC: train on VOC 2007 trainval + 2012 trainval, evaluate on
VOC 2007 test (the usual "07+12" protocol), 20 classes.

  python train.py --config=configs/voc.py --workdir=/tmp/voc \
      --config.init.backbone=/path/to/resnet50-0676ba61.pth

VOC must be prepared for tensorflow-datasets (`tfds build voc/2007 voc/2012
--file_format=array_record`, or set
--config.data.options.data_dir and --config.data.eval_options.data_dir). The recipe is
detectron2's VOC schedule scaled to single-scale training: batch 16, SGD lr 0.01, 18k
iterations with 10x drops at 12k and 16k, horizontal flip, images resized to a short side of
600 (long side at most 1000) on a static 1024x1024 canvas. Metrics: the 12 COCO numbers
(with 'difficult' objects as COCO's crowd regions) and VOC_AP50, PASCAL VOC's own 11-point
AP at IoU 0.5 on VOC 2007 test, which ignores difficult objects as VOC does.
"""

from ml_collections import config_dict

from configs import coco


def get_config():
    c = coco.get_config()
    c.data.dataset = 'voc/2007+2012'
    c.data.train_split = 'train+validation'
    c.data.eval_dataset = 'voc/2007'
    c.data.eval_options = {'data_dir': config_dict.placeholder(str)}
    c.data.eval_split = 'test'
    c.input.short_side = 600
    c.input.max_side = 1000
    c.model.num_classes = 20
    c.train_steps = 18_000
    c.optim.decay_at = (12 / 18, 16 / 18)
    c.optim.warmup_steps = 100
    c.eval_every = 2_000
    c.checkpoint_every = 2_000
    return c
