"""A faithful port of the pytorch-retinanet anchors and FocalLoss from the design documents.

The code follows `shared/reference/retinanet_paper_and_code_zh.md` (sec. 5.4 and 5.6) line for
line; the only changes are that `.cuda()` calls are dropped (tensors follow the inputs' device
and dtype) and that `calc_iou`, which the documents call but do not print, is the upstream one.
It exists to check `LossConfig.pytorch_retinanet()` / `AnchorConfig.pytorch_retinanet()` against
and to benchmark against. Shapes:
  classifications [B, R, K] probabilities (after sigmoid), regressions [B, R, 4],
  anchors [1, R, 4] xyxy, annotations [B, M, 5] (x1, y1, x2, y2, class), class -1 = padding.
"""

import numpy as np
import torch
from torch import nn


def generate_base_anchors(base_size=16, ratios=None, scales=None):
    if ratios is None:
        ratios = np.array([0.5, 1, 2])
    if scales is None:
        scales = np.array([2**0, 2 ** (1.0 / 3.0), 2 ** (2.0 / 3.0)])
    num_anchors = len(ratios) * len(scales)
    anchors = np.zeros((num_anchors, 4))
    anchors[:, 2:] = base_size * np.tile(scales, (2, len(ratios))).T
    areas = anchors[:, 2] * anchors[:, 3]
    anchors[:, 2] = np.sqrt(areas / np.repeat(ratios, len(scales)))
    anchors[:, 3] = anchors[:, 2] * np.repeat(ratios, len(scales))
    anchors[:, 0::2] -= np.tile(anchors[:, 2] * 0.5, (2, 1)).T
    anchors[:, 1::2] -= np.tile(anchors[:, 3] * 0.5, (2, 1)).T
    return anchors


def shift(shape, stride, anchors):
    shift_x = (np.arange(0, shape[1]) + 0.5) * stride
    shift_y = (np.arange(0, shape[0]) + 0.5) * stride
    shift_x, shift_y = np.meshgrid(shift_x, shift_y)
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()))
    shifts = shifts.transpose()
    a = anchors.shape[0]
    k = shifts.shape[0]
    all_anchors = anchors.reshape((1, a, 4)) + shifts.reshape((1, k, 4)).transpose((1, 0, 2))
    return all_anchors.reshape((k * a, 4))


def anchors_for_image_shape(image_shape, pyramid_levels=(3, 4, 5, 6, 7)):
    """`Anchors.forward` for an image of shape (H, W): [R, 4] float32."""
    strides = [2**x for x in pyramid_levels]
    sizes = [2 ** (x + 2) for x in pyramid_levels]
    image_shape = np.array(image_shape)
    image_shapes = [(image_shape + 2**x - 1) // (2**x) for x in pyramid_levels]
    all_anchors = np.zeros((0, 4)).astype(np.float32)
    for idx, _ in enumerate(pyramid_levels):
        anchors = generate_base_anchors(base_size=sizes[idx])
        shifted_anchors = shift(image_shapes[idx], strides[idx], anchors)
        all_anchors = np.append(all_anchors, shifted_anchors, axis=0)
    return all_anchors.astype(np.float32)


def calc_iou(a, b):
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = torch.min(torch.unsqueeze(a[:, 2], dim=1), b[:, 2]) - torch.max(
        torch.unsqueeze(a[:, 0], 1), b[:, 0]
    )
    ih = torch.min(torch.unsqueeze(a[:, 3], dim=1), b[:, 3]) - torch.max(
        torch.unsqueeze(a[:, 1], 1), b[:, 1]
    )
    iw = torch.clamp(iw, min=0)
    ih = torch.clamp(ih, min=0)
    ua = torch.unsqueeze((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), dim=1) + area - iw * ih
    ua = torch.clamp(ua, min=1e-8)
    intersection = iw * ih
    return intersection / ua


class FocalLoss(nn.Module):
    def forward(self, classifications, regressions, anchors, annotations):
        # The reference's forward, its per-image body and its regression part moved into
        # functions of their own; every operation as in the original, in the same order.
        classification_losses = []
        regression_losses = []
        for j in range(classifications.shape[0]):
            cls_loss, reg_loss = _image_losses(
                classifications[j, :, :], regressions[j, :, :], anchors[0, :, :], annotations[j]
            )
            classification_losses.append(cls_loss)
            regression_losses.append(reg_loss)
        return (
            torch.stack(classification_losses).mean(dim=0, keepdim=True),
            torch.stack(regression_losses).mean(dim=0, keepdim=True),
        )


def _image_losses(classification, regression, anchor, bbox_annotation):
    """One image's (classification, regression) loss: the reference's loop body."""
    alpha = 0.25
    gamma = 2.0
    bbox_annotation = bbox_annotation[bbox_annotation[:, 4] != -1]

    classification = torch.clamp(classification, 1e-4, 1.0 - 1e-4)

    if bbox_annotation.shape[0] == 0:
        alpha_factor = torch.ones_like(classification) * alpha
        alpha_factor = 1.0 - alpha_factor
        focal_weight = classification
        focal_weight = alpha_factor * torch.pow(focal_weight, gamma)
        bce = -(torch.log(1.0 - classification))
        cls_loss = focal_weight * bce
        return cls_loss.sum(), regression.new_zeros(())

    iou = calc_iou(anchor, bbox_annotation[:, :4])
    iou_max, iou_argmax = torch.max(iou, dim=1)

    targets = torch.ones_like(classification) * -1
    targets[torch.lt(iou_max, 0.4), :] = 0
    positive_indices = torch.ge(iou_max, 0.5)
    num_positive_anchors = positive_indices.sum()
    assigned_annotations = bbox_annotation[iou_argmax, :]
    targets[positive_indices, :] = 0
    targets[positive_indices, assigned_annotations[positive_indices, 4].long()] = 1

    alpha_factor = torch.ones_like(targets) * alpha
    alpha_factor = torch.where(torch.eq(targets, 1.0), alpha_factor, 1.0 - alpha_factor)
    focal_weight = torch.where(torch.eq(targets, 1.0), 1.0 - classification, classification)
    focal_weight = alpha_factor * torch.pow(focal_weight, gamma)
    bce = -(targets * torch.log(classification) + (1.0 - targets) * torch.log(1.0 - classification))
    cls_loss = focal_weight * bce
    cls_loss = torch.where(torch.ne(targets, -1.0), cls_loss, torch.zeros_like(cls_loss))
    cls_loss = cls_loss.sum() / torch.clamp(num_positive_anchors.to(cls_loss.dtype), min=1.0)

    if positive_indices.sum() > 0:
        reg_loss = _regression_loss(
            regression, anchor, assigned_annotations[positive_indices, :], positive_indices
        )
    else:
        reg_loss = regression.new_zeros(())
    return cls_loss, reg_loss


def _regression_loss(regression, anchor, assigned_annotations, positive_indices):
    """The reference's smooth-L1 (beta 1/9) over the positive anchors, targets / (.1,.1,.2,.2)."""
    anchor_widths = anchor[:, 2] - anchor[:, 0]
    anchor_heights = anchor[:, 3] - anchor[:, 1]
    anchor_ctr_x = anchor[:, 0] + 0.5 * anchor_widths
    anchor_ctr_y = anchor[:, 1] + 0.5 * anchor_heights
    anchor_widths_pi = anchor_widths[positive_indices]
    anchor_heights_pi = anchor_heights[positive_indices]
    anchor_ctr_x_pi = anchor_ctr_x[positive_indices]
    anchor_ctr_y_pi = anchor_ctr_y[positive_indices]

    gt_widths = assigned_annotations[:, 2] - assigned_annotations[:, 0]
    gt_heights = assigned_annotations[:, 3] - assigned_annotations[:, 1]
    gt_ctr_x = assigned_annotations[:, 0] + 0.5 * gt_widths
    gt_ctr_y = assigned_annotations[:, 1] + 0.5 * gt_heights

    gt_widths = torch.clamp(gt_widths, min=1)
    gt_heights = torch.clamp(gt_heights, min=1)

    targets_dx = (gt_ctr_x - anchor_ctr_x_pi) / anchor_widths_pi
    targets_dy = (gt_ctr_y - anchor_ctr_y_pi) / anchor_heights_pi
    targets_dw = torch.log(gt_widths / anchor_widths_pi)
    targets_dh = torch.log(gt_heights / anchor_heights_pi)

    targets = torch.stack((targets_dx, targets_dy, targets_dw, targets_dh))
    targets = targets.t()
    targets = targets / targets.new_tensor([[0.1, 0.1, 0.2, 0.2]])

    regression_diff = torch.abs(targets - regression[positive_indices, :])
    regression_loss = torch.where(
        torch.le(regression_diff, 1.0 / 9.0),
        0.5 * 9.0 * torch.pow(regression_diff, 2),
        regression_diff - 0.5 / 9.0,
    )
    return regression_loss.mean()
