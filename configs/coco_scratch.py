"""RetinaNet R50-FPN on COCO 2017 from scratch: no pretrained weights, GroupNorm everywhere.

  python train.py --config=configs/coco_scratch.py --workdir=/tmp/coco_scratch

The recipe of detectron2's scratch GroupNorm models (configs/Misc/
scratch_mask_rcnn_R_50_FPN_3x_gn.yaml, after He, Girshick and Dollar, "Rethinking ImageNet
Pre-training", 2019), applied to RetinaNet:
  - GroupNorm (32 groups) after every convolution of the ResNet-50, after the FPN's lateral
    and output convolutions, and in both head subnets; nothing frozen (FREEZE_AT 0);
  - the 3x schedule: 270k iterations at batch 16, 10x drops at 210k and 250k (their STEPS and
    MAX_ITER), linear warmup over 1000 iterations from lr/1000 (detectron2's default);
  - SGD momentum 0.9, weight decay 1e-4 on kernels, lr 0.01 (RetinaNet's base rate at batch 16,
    where Mask R-CNN uses 0.02).
Everything else as configs/coco.py (images, anchors, loss, bf16 compute). The paper reports
scratch GN models matching ImageNet-pretrained ones with such longer schedules; this config has
not been trained to the end here (no COCO or GPU time in this project yet).
"""

from configs import coco


def get_config():
    c = coco.get_config()
    c.init.backbone = ''  # from scratch
    c.model.update(norm='group', fpn_norm='group', head_group_norm=True, freeze_at=0)
    c.train_steps = 270_000
    c.optim.decay_at = (210 / 270, 250 / 270)
    c.eval_every = 30_000
    c.checkpoint_every = 5_000
    return c
