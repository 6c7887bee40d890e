"""Sparse anchor matching for the RPN: only (box, anchor) pairs that overlap are ever formed.

torchvision's RPN builds a dense ``M x N`` IoU matrix per image (``M`` ground-truth boxes,
``N`` anchors, both ``(x1, y1, x2, y2)`` in model-input pixels, i.e. tile pixels scaled by
``ModelConfig.upsample``). With ~100 cars in a chip and ~100k anchors that matrix dominated a
CPU training step. :func:`overlapping_pairs` finds the pairs with a positive IoU by bucketing
anchors by size tier and centre; :func:`sparse_match` turns them into the same matches as
torchvision's ``Matcher``; ``_SparseMatchRPN`` is the stock RPN using it, installed by
:func:`geoseg.models.build_model`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork

__all__ = ["overlapping_pairs", "sparse_match"]


def _ranges(starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten ranges ``[starts[k], starts[k] + lengths[k])``: ``(owner k, index)`` per element."""
    owner = torch.repeat_interleave(torch.arange(len(starts), device=starts.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    index = starts[owner] + torch.arange(len(owner), device=starts.device) - offsets[owner]
    return owner, index


def overlapping_pairs(gt: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All (ground truth, anchor) pairs with a positive IoU, without the dense ``M x N`` matrix.

    Anchors are grouped by their longest side into power-of-two tiers; within a tier their
    centres are bucketed on a grid of half the tier's side, so each box only meets the anchors
    of the buckets its own extent (plus the tier's half side) reaches.

    Args:
        gt: float ``[M, 4]`` boxes ``(x1, y1, x2, y2)``, model-input pixels.
        anchors: float ``[N, 4]`` boxes in the same frame.

    Returns:
        ``(gt_index, anchor_index, iou)``: int64 ``[P]``, int64 ``[P]``, float ``[P]`` with
        ``iou > 0``; every pair with a positive IoU appears exactly once.
    """
    device = anchors.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if len(gt) == 0 or len(anchors) == 0:
        return empty, empty, torch.zeros(0, dtype=anchors.dtype, device=device)
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    side = torch.clamp(torch.maximum(aw, ah), min=1.0)
    tier = torch.ceil(torch.log2(side)).to(torch.int64)
    acx = (anchors[:, 0] + anchors[:, 2]) / 2
    acy = (anchors[:, 1] + anchors[:, 3]) / 2
    gi_all, ai_all = [], []
    for t in torch.unique(tier).tolist():
        members = torch.nonzero(tier == t).flatten()
        limit = float(2**t)  # every anchor of the tier has both sides <= limit
        cell = limit / 2
        x0 = float(acx[members].min())
        y0 = float(acy[members].min())
        cx = torch.floor((acx[members] - x0) / cell).to(torch.int64)
        cy = torch.floor((acy[members] - y0) / cell).to(torch.int64)
        ncol = int(cx.max()) + 1
        nrow = int(cy.max()) + 1
        key = cy * ncol + cx
        order = torch.argsort(key, stable=True)
        members, key = members[order], key[order]
        bounds = torch.searchsorted(key, torch.arange(nrow * ncol + 1, device=device))
        # an anchor centre within (gt edge - limit/2, gt edge + limit/2) may overlap the box
        half = limit / 2
        c0 = torch.floor((gt[:, 0] - half - x0) / cell).to(torch.int64).clamp(0, ncol - 1)
        c1 = torch.floor((gt[:, 2] + half - x0) / cell).to(torch.int64).clamp(0, ncol - 1)
        r0 = torch.floor((gt[:, 1] - half - y0) / cell).to(torch.int64).clamp(0, nrow - 1)
        r1 = torch.floor((gt[:, 3] + half - y0) / cell).to(torch.int64).clamp(0, nrow - 1)
        # (gt, row) pairs; each row's run of buckets c0..c1 is contiguous in `key` order
        g_of_row, row = _ranges(r0, r1 - r0 + 1)
        start = bounds[row * ncol + c0[g_of_row]]
        stop = bounds[row * ncol + c1[g_of_row] + 1]
        run, pos = _ranges(start, stop - start)
        gi_all.append(g_of_row[run])
        ai_all.append(members[pos])
    gi = torch.cat(gi_all)
    ai = torch.cat(ai_all)
    g, a = gt[gi], anchors[ai]
    iw = (torch.minimum(g[:, 2], a[:, 2]) - torch.maximum(g[:, 0], a[:, 0])).clamp(min=0)
    ih = (torch.minimum(g[:, 3], a[:, 3]) - torch.maximum(g[:, 1], a[:, 1])).clamp(min=0)
    inter = iw * ih
    area_g = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    iou = inter / (area_g + area_a - inter)
    keep = inter > 0
    return gi[keep], ai[keep], iou[keep]


def sparse_match(
    gt: Tensor, anchors: Tensor, *, high: float, low: float, allow_low_quality: bool = True
) -> Tensor:
    """Match anchors to boxes as torchvision's ``Matcher``, from the overlapping pairs only.

    Same result as ``Matcher(high, low, allow_low_quality)(box_iou(gt, anchors))`` except in
    one degenerate case: a ground-truth box overlapping no anchor at all, which torchvision
    turns into "every anchor is matched to box 0"; here it simply gets no anchor.

    Args:
        gt: float ``[M, 4]`` ground-truth boxes, M >= 1.
        anchors: float ``[N, 4]`` anchors (or proposals), same frame.
        high: IoU at or above which an anchor is matched.
        low: IoU below which an anchor is background (-1); between low and high: ignored (-2).
        allow_low_quality: also match each box's best anchor(s), as Faster R-CNN's RPN does.

    Returns:
        int64 ``[N]``: the matched box index, -1 (background) or -2 (ignored).
    """
    gi, ai, iou = overlapping_pairs(gt, anchors)
    n = len(anchors)
    best = torch.zeros(n, dtype=iou.dtype, device=anchors.device)
    best.scatter_reduce_(0, ai, iou, reduce="amax", include_self=True)
    # argmax per anchor: the lowest box index among the pairs reaching the anchor's best IoU
    is_best = iou == best[ai]
    arg = torch.full((n,), len(gt), dtype=torch.int64, device=anchors.device)
    arg.scatter_reduce_(0, ai[is_best], gi[is_best], reduce="amin", include_self=True)
    arg[arg == len(gt)] = 0
    matches = arg.clone()
    matches[best < low] = -1
    matches[(best >= low) & (best < high)] = -2
    if allow_low_quality and len(iou):
        per_gt = torch.zeros(len(gt), dtype=iou.dtype, device=anchors.device)
        per_gt.scatter_reduce_(0, gi, iou, reduce="amax", include_self=True)
        top = ai[iou == per_gt[gi]]
        matches[top] = arg[top]
    return matches


class _SparseMatchRPN(RegionProposalNetwork):
    """torchvision's RPN with anchors matched through :func:`sparse_match`.

    The stock RPN builds a dense ``boxes x anchors`` IoU matrix per image: with ~100 cars in a
    chip and ~100k anchors (stride-4 level, 5 aspect ratios, 2x upsampled input) that matrix
    and the matcher's passes over it took most of a CPU training step. Only the matching
    differs; the module's parameters and state-dict keys are the stock ones.
    """

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Label each image's anchors against its boxes, as the stock method does.

        Returns:
            Per image: float ``[N]`` labels (1 object, 0 background, -1 ignored) and the
            ``[N, 4]`` matched boxes, in model-input pixels.
        """
        labels: list[Tensor] = []
        matched_gt_boxes: list[Tensor] = []
        matcher = self.proposal_matcher
        for anchors_per_image, targets_per_image in zip(anchors, targets, strict=True):
            gt_boxes = targets_per_image["boxes"]
            if gt_boxes.numel() == 0:
                device = anchors_per_image.device
                matched_gt_boxes.append(torch.zeros_like(anchors_per_image, dtype=torch.float32))
                labels.append(torch.zeros(len(anchors_per_image), device=device))
                continue
            matched_idxs = sparse_match(
                gt_boxes,
                anchors_per_image,
                high=matcher.high_threshold,
                low=matcher.low_threshold,
                allow_low_quality=matcher.allow_low_quality_matches,
            )
            matched_gt_boxes.append(gt_boxes[matched_idxs.clamp(min=0)])
            labels_per_image = (matched_idxs >= 0).to(torch.float32)
            labels_per_image[matched_idxs == matcher.BELOW_LOW_THRESHOLD] = 0.0
            labels_per_image[matched_idxs == matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(labels_per_image)
        return labels, matched_gt_boxes
