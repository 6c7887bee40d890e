"""Training-step time of the demo architecture: sparse vs torchvision's dense anchor matching.

Times one optimiser step (forward + backward) on the densest chips of a chip folder, and the
forward time of the RPN alone, for each input upsampling factor, with the RPN's anchor
matching done by geoseg's ``sparse_match`` (the default) or by torchvision's dense
``box_iou`` + ``Matcher``. Prints a table; nothing is asserted.

Usage:
  .venv/bin/python benchmarks/bench_train_step.py --chips /tmp/geoseg_demo/chips/scene_100 \
      [--upsample 1 2] [--steps 3] [--batch 4]

The chip folder comes from ``benchmarks/train_demo.py`` (or ``geoseg chips``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torchvision.models.detection.rpn import RegionProposalNetwork

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_demo import CLASSES, DEMO_MODEL

from geoseg.config import ModelConfig, config_from_dict
from geoseg.models import build_model
from geoseg.train import ChipDataset, _collate


def _time_forward(module: torch.nn.Module) -> list[float]:
    """A list that receives the duration of each forward call of ``module``, in seconds."""
    times: list[float] = []

    def start(*_: object) -> None:
        times.append(-time.perf_counter())

    def stop(*_: object) -> None:
        times[-1] += time.perf_counter()

    module.register_forward_pre_hook(start)
    module.register_forward_hook(stop)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chips", type=Path, required=True)
    ap.add_argument("--upsample", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = ChipDataset([args.chips], classes=CLASSES)
    dense = sorted(range(len(ds)), key=lambda i: -len(ds[i][1]["boxes"]))[: args.batch]
    images, targets = _collate([ds[i] for i in dense])
    n_obj = [len(t["boxes"]) for t in targets]
    chip = images[0].shape[-1]
    print(f"{args.chips}: {args.batch} densest chips of {chip} px, objects {n_obj}")
    print("upsample | matching | RPN forward s | step s (fwd+bwd)")
    for up in args.upsample:
        anchors = [[round(a * up) for a in lvl] for lvl in DEMO_MODEL["anchor_sizes"]]
        cfg = config_from_dict(
            ModelConfig,
            {
                **DEMO_MODEL,
                "anchor_sizes": anchors,
                "upsample": up,
                "min_size": round(chip * up),
                "max_size": round(chip * up),
            },
        )
        for matching in ("dense", "sparse"):
            torch.manual_seed(0)
            model = build_model(cfg, num_classes=len(CLASSES), pretrained="imagenet")
            if matching == "dense":
                model.rpn.__class__ = RegionProposalNetwork  # torchvision's own matching
            model.train()
            rpn_times = _time_forward(model.rpn)
            steps = []
            for _ in range(args.steps + 1):  # the first step warms up
                t0 = time.perf_counter()
                loss = sum(model(images, targets).values())
                loss.backward()
                model.zero_grad(set_to_none=True)
                steps.append(time.perf_counter() - t0)
            rpn = sorted(rpn_times[1:])[len(rpn_times[1:]) // 2]
            step = sorted(steps[1:])[len(steps[1:]) // 2]
            print(f"{up:8.1f} | {matching:8s} | {rpn:13.2f} | {step:.2f}", flush=True)


if __name__ == "__main__":
    main()
