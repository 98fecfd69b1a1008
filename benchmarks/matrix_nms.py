"""Matrix NMS against greedy mask NMS and Soft-NMS (visionnb.seg.matrix_nms) for 50 to 1000 candidate masks, CPU.

The candidates imitate a SOLO head's output: `N // 25` (at least 3) random ellipses of 10 classes on a `--size` x `--size`
mask (default 128, SOLOv2's mask resolution for a 512 px input, 1/4 of it), and `N` noisy copies of them (centre moved and radii
scaled by up to 10 %), each scored by its IoU with the object it copies times a random factor in [0.6, 1], so better copies score
higher, as with a trained model. The three functions get the same masks; all three compute the same IoU matrix with one
`N x N x HW` matrix product (timed alone in its own column), then Matrix NMS does a few `N x N` element-wise operations while greedy
NMS (IoU 0.5) and Soft-NMS (Gaussian, sigma 0.5) run a Python loop of `N` steps. Each function runs `--runs` times after `--warmup`
untimed runs, in turns; the table gives the median and the ratios greedy / matrix and soft / matrix (above 1: Matrix NMS faster).

Agreement: greedy NMS keeps `k` masks. Matrix NMS and Soft-NMS return decayed scores, not a set, so each is given the same budget:
its `k` highest decayed scores. The agreement columns give the share of greedy's `k` masks that are among them (100 %: the same
masks survive). It measures whether the soft methods rank the masks greedy NMS keeps first, without choosing a score threshold.

    python benchmarks/matrix_nms.py --size 128 --runs 10 --threads 1
"""
import argparse, os, platform, statistics, time

import torch

from visionnb.core import torch_threads
from visionnb.seg.matrix_nms import mask_iou, mask_nms, matrix_nms, soft_mask_nms

CLASSES = 10


def ellipses(centres, radii, size:int) -> torch.Tensor:
    "Filled ellipses `[N, size, size]` (bool) from centres and radii `[N, 2]` (x, y) in pixels."
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing='ij')
    dx = (x - centres[:, 0, None, None]) / radii[:, 0, None, None]
    dy = (y - centres[:, 1, None, None]) / radii[:, 1, None, None]
    return dx ** 2 + dy ** 2 <= 1


def candidates(n:int, size:int, seed:int=0) -> tuple:
    "`n` noisy copies (masks, labels, scores) of `max(3, n // 25)` random ellipses."
    generator = torch.Generator().manual_seed(seed)
    objects = max(3, n // 25)
    radii = size * (0.05 + 0.2 * torch.rand(objects, 2, generator=generator))
    centres = radii + (size - 2 * radii) * torch.rand(objects, 2, generator=generator)
    labels = torch.randint(0, CLASSES, (objects,), generator=generator)
    source = torch.randint(0, objects, (n,), generator=generator)
    jitter = lambda: 1 + 0.2 * (torch.rand(n, 2, generator=generator) - 0.5)
    masks = ellipses(centres[source] + (jitter() - 1) * radii[source], radii[source] * jitter(), size)
    truth = ellipses(centres, radii, size)
    closeness = mask_iou(masks, truth)[torch.arange(n), source]
    scores = closeness * (0.6 + 0.4 * torch.rand(n, generator=generator))
    return masks, labels[source], scores


def agreement(kept:torch.Tensor, decayed:torch.Tensor) -> float:
    "Share of the masks `kept` that are among the `len(kept)` highest `decayed` scores."
    top = decayed.topk(len(kept)).indices
    return torch.isin(kept, top).float().mean().item()


def timed(cases:dict, runs:int, warmup:int) -> dict:
    "Median milliseconds of each zero-argument callable in `cases`, run in turns."
    times = {name: [] for name in cases}
    for i in range(warmup + runs):
        for name, fn in cases.items():
            start = time.perf_counter(); fn(); elapsed = time.perf_counter() - start
            if i >= warmup: times[name].append(1000 * elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--counts', type=int, nargs='+', default=[50, 200, 500, 1000])
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    rows = []
    with torch_threads(args.threads):
        for n in args.counts:
            masks, labels, scores = candidates(n, args.size)
            ms = timed(dict(iou=lambda: mask_iou(masks), matrix=lambda: matrix_nms(masks, labels, scores),
                            greedy=lambda: mask_nms(masks, labels, scores), soft=lambda: soft_mask_nms(masks, labels, scores)),
                       args.runs, args.warmup)
            kept = mask_nms(masks, labels, scores)
            rows.append((n, max(3, n // 25), ms, len(kept), agreement(kept, matrix_nms(masks, labels, scores)),
                         agreement(kept, soft_mask_nms(masks, labels, scores))))
    print(f'Matrix NMS vs greedy mask NMS and Soft-NMS, masks {args.size} x {args.size}, {CLASSES} classes, '
          f'median of {args.runs} runs after {args.warmup} warm-up\n')
    print('| N | objects | IoU matrix (ms) | Matrix NMS (ms) | greedy NMS (ms) | Soft-NMS (ms) | greedy / matrix | soft / matrix '
          '| greedy keeps k | of those in Matrix NMS top-k | in Soft-NMS top-k |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for n, objects, ms, k, matrix_agree, soft_agree in rows:
        print(f"| {n} | {objects} | {ms['iou']:.1f} | {ms['matrix']:.1f} | {ms['greedy']:.1f} | {ms['soft']:.1f} | "
              f"{ms['greedy'] / ms['matrix']:.2f} | {ms['soft'] / ms['matrix']:.2f} | {k} | {matrix_agree:.0%} | {soft_agree:.0%} |")
    print(f'\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads')


if __name__ == '__main__':
    main()
