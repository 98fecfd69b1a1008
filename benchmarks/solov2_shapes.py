"""COCO mask and box AP of SOLOv2 trained from scratch on the embedded shapes dataset, the check that the learner's metric equals
pycocotools run directly on the same predictions, and the cost of encoding the predicted masks as COCO RLE.

Trains `det_learner(dls, 'solov2', ...)` (a ResNet-18 of half widths, 64-channel FPN and heads: what a CPU trains in minutes) with
`fit_one_cycle` on `shapes_records(--size)` at `--img-size` px, seeded with `set_seed(0, reproducible=True)`, and prints:

1. the progress table (losses, the six COCO mask numbers, box AP) and the training time;
2. the last epoch's mask AP from the learner's metric against `COCOeval(COCO(annotation file), loadRes(the same RLE results), 'segm')`,
   pycocotools reading the dataset's own annotation file; both must be equal;
3. the time to encode predicted masks as RLE with `encode_masks` (mask by mask, one column-major copy each) against pycocotools' batch
   call on the whole stack made column-major at once (the reference), for the validation predictions (with the encoding's share of the
   whole validation) and for 100 masks of 640 x 480.

    OMP_NUM_THREADS=2 python benchmarks/solov2_shapes.py --size small --epochs 12 --img-size 256 --lr 2e-3
"""
import argparse, contextlib, io, os, platform, statistics, time

import numpy as np
import torch
from fastai.torch_core import set_seed
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionnb.data.core import encode_masks
from visionnb.data.loaders import det_dls
from visionnb.data.shapes import shapes_records
from visionnb.learner.det import det_learner
from visionnb.seg.solov2 import solo_scale_ranges

SMALL_SOLOV2 = dict(channels=64, head_channels=64, num_convs=2, mask_channels=32, kernel_channels=64, num_grids=(24, 20, 16, 12, 8),
                    scale_ranges=solo_scale_ranges(0.5), backbone_kwargs=dict(channels=(32, 64, 128, 256)))


def pycocotools_stats(annotation_file, results) -> list:
    "The six COCO segm numbers of `results` by pycocotools alone, from the dataset's annotation file."
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotation_file))
        evaluation = COCOeval(truth, truth.loadRes(results), 'segm')
        evaluation.evaluate(); evaluation.accumulate(); evaluation.summarize()
    return evaluation.stats[:6].tolist()


def median_seconds(fn, runs:int=5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', default='small', choices=['tiny', 'quick', 'small', 'default'])
    parser.add_argument('--img-size', type=int, default=256)
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--bs', type=int, default=8)
    args = parser.parse_args()

    set_seed(0, reproducible=True)
    train, valid = shapes_records(args.size, 'train'), shapes_records(args.size, 'valid')
    dls = det_dls(train, valid, size=args.img_size, bs=args.bs, masks=True)
    learn = det_learner(dls, 'solov2', 'resnet18', model_kwargs=SMALL_SOLOV2, precision='fp32')
    start = time.perf_counter()
    with learn.no_bar(): learn.fit_one_cycle(args.epochs, args.lr)
    seconds = time.perf_counter() - start
    names = list(learn.recorder.metric_names)
    print(f'SOLOv2 (ResNet-18 half widths, 64-channel FPN and heads) from scratch on shapes {args.size} '
          f'({len(train)} train / {len(valid)} valid images) at {args.img_size} px, {args.epochs} epochs, lr {args.lr}, batch {args.bs}\n')
    print('| ' + ' | '.join(names) + ' |\n|' + '---|' * len(names))
    for epoch, row in enumerate(learn.recorder.values):
        print(f'| {epoch} | ' + ' | '.join('' if v is None else f'{v:.4f}' for v in row) + ' | |')
    print(f'\ntraining: {seconds:.0f} s')

    evaluator = next(m.evaluator for m in learn.metrics if m.name == 'mask_AP')
    ours = [evaluator.stats[k] for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')]
    if not evaluator.results: raise SystemExit('no predictions above the score threshold: train longer (more --epochs) before comparing with pycocotools')
    theirs = pycocotools_stats(valid.items[0].source, evaluator.results)
    print(f'\nmask AP by the learner:     {ours}\nmask AP by pycocotools:     {theirs}\nequal: {ours == theirs}')

    masks = [p['masks'].numpy() for p in _validation_predictions(learn)]
    large = [_boxes_as_masks(100, 640, 480)]
    validate_s = median_seconds(lambda: learn.validate(), runs=1)
    print('\nRLE encoding:\n\n| case | encode_masks (ms) | whole stack at once (ms) | ratio stack / ours | share of validation |\n|---|---|---|---|---|')
    for case, stacks in ((f'{sum(len(m) for m in masks)} predicted masks of {len(masks)} validation images', masks), ('100 masks of 640 x 480', large)):
        ours_s = median_seconds(lambda: [encode_masks(m) for m in stacks])
        stack_s = median_seconds(lambda: [mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0))) for m in stacks])
        share = f'{ours_s / validate_s:.1%} of {validate_s:.1f} s' if stacks is masks else ''
        print(f'| {case} | {ours_s * 1e3:.1f} | {stack_s * 1e3:.1f} | {stack_s / ours_s:.2f} | {share} |')
    print(f'\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads')


def _boxes_as_masks(n:int, height:int, width:int) -> np.ndarray:
    "`n` random filled rectangles of 5 to 200 px as uint8 masks `[n, height, width]`."
    rng, masks = np.random.default_rng(0), np.zeros((n, height, width), np.uint8)
    for m in masks:
        y, x = rng.integers(0, height - 200), rng.integers(0, width - 200)
        m[y:y + rng.integers(5, 200), x:x + rng.integers(5, 200)] = 1
    return masks


def _validation_predictions(learn) -> list:
    "The learner's validation predictions in the original images' pixels."
    from visionnb.data.transforms import to_original
    model, out = learn.model.eval(), []
    with torch.no_grad():
        for images, targets in learn.dls.valid:
            for p, t in zip(model.postprocess(model(images), [tuple(t['size']) for t in targets]), targets):
                out.append(to_original(p, t['size'], t['orig_size']))
    return out


if __name__ == '__main__':
    main()
