"""A detector that joins visionnb through one registry line, as a new model's notebook would export it.

`Dot` is a small anchor-free detector: one point per feature-map cell, a single shared tower that predicts each
point's classes and its distances to the four sides of a box, FCOS's assignment (`assign_fcos`), focal and GIoU
losses. It lives outside the package on purpose: tests/test_house.py registers it with one `DETECTORS` entry and then
trains, exports, loads, explains and analyses it with the library as it is, touching no other module.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from visionnb.det.core import DenseDetector, batch_normalizer, conv_tower, flatten_levels, positive_pairs, predictor, detector_pyramid, weighted_sum, image_prior_weight
from visionnb.det.fcos import assign_fcos, fcos_decode, fcos_points, scale_ranges


class DotHead(nn.Module):
    "One tower for every level, then class logits and l-t-r-b distances (in strides) per point."
    def __init__(self, channels:int, num_classes:int, num_convs:int):
        super().__init__()
        self.num_classes = num_classes
        self.tower = conv_tower(channels, num_convs, norm='gn', bias=True)
        self.cls_logits, self.bbox_reg = predictor(channels, num_classes, 0.01), predictor(channels, 4)

    def forward(self, features:list) -> dict:
        trunks = [self.tower(f) for f in features]
        return dict(cls_logits=flatten_levels([self.cls_logits(t) for t in trunks], self.num_classes),
                    bbox_regression=flatten_levels([F.relu(self.bbox_reg(t)) for t in trunks], 4))


class Dot(DenseDetector):
    "Points on P3-P5, FCOS's assignment, class score alone (no centerness)."
    def __init__(self, backbone, neck, head, vocab, score_thresh:float=0.05, nms_thresh:float=0.6, topk:int=1000, max_detections:int=100):
        super().__init__(backbone, neck, head, vocab)
        self.score_thresh, self.nms_thresh, self.topk, self.max_detections = score_thresh, nms_thresh, topk, max_detections
        self.register_buffer('level_bounds', scale_ranges(self.strides, 4., 8.), persistent=False)

    def priors(self, image_size, feature_sizes, device, dtype): return fcos_points(feature_sizes, self.strides, 0., device, dtype)

    def assign(self, outputs, gt_boxes, gt_mask):
        return assign_fcos(outputs['priors'], outputs['level_counts'], self.level_bounds, gt_boxes, gt_mask)

    def loss(self, outputs, targets, prior_weight=None):
        gt_boxes, gt_labels, gt_mask = self.padded_targets(targets, outputs['cls_logits'].device)
        matched = self.assign(outputs, gt_boxes, gt_mask)
        image, point, boxes, labels = positive_pairs(matched, gt_boxes, gt_labels)
        weight, positives = image_prior_weight(prior_weight, matched), batch_normalizer(len(image))
        classes = torch.zeros_like(outputs['cls_logits'])
        classes[image, point, labels] = 1.
        predicted = fcos_decode(outputs['priors'][point], outputs['bbox_regression'][image, point])
        giou = generalized_box_iou_loss(predicted, boxes, reduction='none')
        return dict(classification=weighted_sum(sigmoid_focal_loss(outputs['cls_logits'], classes, reduction='none'), weight) / positives,
                    bbox_regression=weighted_sum(giou, None if weight is None else weight[image, point]) / positives)

    def scoring(self, outputs):
        return torch.sigmoid(outputs['cls_logits']), lambda index, deltas: fcos_decode(outputs['priors'][index], deltas)


def dot(vocab, backbone='resnet18', pretrained=None, channels:int=64, num_convs:int=2, **kwargs) -> Dot:
    "A `Dot` detector for the classes `vocab` on `backbone`'s C3-C5 and an FPN `channels` wide."
    body, fpn, kwargs = detector_pyramid(backbone, pretrained, channels, kwargs, extra_levels=0)
    return Dot(body, fpn, DotHead(channels, len(vocab), num_convs), vocab, **kwargs)
