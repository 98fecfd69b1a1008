"""Validation accuracy and training time of `cls_learner` from scratch on the shapes classification variant.

Trains `--arch` (our ResNet of that name if there is one, else timm's) from random weights with
`fit_one_cycle` on `shapes_classification_path(--size)` (64 px crops, six classes), seeded with
`set_seed(0, reproducible=True)`, optionally with `--augment` (flips in both directions, zoom up to 1.1, lighting:
label-preserving for every shape class, which are drawn at random angles anyway), and prints a Markdown table: epoch, train loss, valid loss, accuracy,
seconds, then the total time and the machine it ran on.

    OMP_NUM_THREADS=1 python benchmarks/cls_shapes.py --size default --arch resnet18 --epochs 20 --lr 3e-3 --bs 32 --augment   # 0.9745 in 808 s
"""
import argparse, os, platform, time

import torch
from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, set_seed

from visionnb.data.shapes import shapes_classification_path
from visionnb.learner.cls import cls_learner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', default='default', choices=['tiny', 'small', 'default'])
    parser.add_argument('--arch', default='resnet18')
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--bs', type=int, default=32)
    parser.add_argument('--px', type=int, default=64, help='image side; the crops are 64 px')
    parser.add_argument('--precision', default='auto', choices=['auto', 'fp32', 'fp16', 'bf16'])
    parser.add_argument('--augment', action='store_true', help='flips, zoom and lighting on the training batches')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    set_seed(args.seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(shapes_classification_path(args.size), train='train', valid='valid', bs=args.bs,
                                       num_workers=0, item_tfms=Resize(args.px) if args.px != 64 else None,
                                       batch_tfms=aug_transforms(flip_vert=True, max_rotate=0, max_zoom=1.1, max_warp=0) if args.augment else None)
    learn = cls_learner(dls, args.arch, precision=args.precision)
    rows, learn.logger = [], lambda row: rows.append([f'{v:.4f}' if isinstance(v, float) else str(v) for v in row])
    start = time.perf_counter()
    with learn.no_bar(): learn.fit_one_cycle(args.epochs, args.lr)
    total = time.perf_counter() - start

    print(f"cls_learner({args.arch!r}) on shapes classification '{args.size}' ({len(dls.train_ds)} train / {len(dls.valid_ds)} valid), "
          f"{args.px} px, bs {args.bs}, fit_one_cycle({args.epochs}, {args.lr}), precision {args.precision}, augment {args.augment}\n")
    print('| epoch | train loss | valid loss | accuracy | time |\n|---|---|---|---|---|')
    for row in rows: print('| ' + ' | '.join(map(str, row)) + ' |')
    print(f"\nfinal valid accuracy {float(learn.recorder.values[-1][2]):.4f} in {total:.0f} s of training on "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == '__main__':
    main()
