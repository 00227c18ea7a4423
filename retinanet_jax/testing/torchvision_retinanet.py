"""torchvision's real RetinaNet around a stand-in backbone (one 1x1 conv, 8 channels).

Its `compute_loss` and `postprocess_detections` are torchvision's own code, so tests and
benchmarks compare against them without building (or running) a ResNet-50.
"""

import functools

from torch import nn
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead


def tiny_retinanet(num_classes: int, box_loss: str = 'l1') -> RetinaNet:
    """box_loss 'l1' is retinanet_resnet50_fpn (v1); 'giou' with GroupNorm heads is v2."""
    backbone = nn.Conv2d(3, 8, 1)
    backbone.out_channels = 8
    norm = functools.partial(nn.GroupNorm, 4) if box_loss == 'giou' else None
    head = RetinaNetHead(8, 9, num_classes, norm_layer=norm)
    head.regression_head._loss_type = box_loss
    return RetinaNet(backbone, num_classes=num_classes, head=head).eval()
