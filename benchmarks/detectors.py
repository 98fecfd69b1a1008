"""Training-step time and inference latency of visionnb's FCOS and RetinaNet against torchvision's, same weights, same run; and the
end-to-end latency of visionnb's SOLOv2 against torchvision's Mask R-CNN (the instance segmenter torchvision has), masks encoded as COCO RLE.

Both sides get the same batch of random images of `--size` px (square, so torchvision's transform does not resize
beyond its identity interpolation) and the same random targets. A training step is forward, loss, backward and an SGD step;
inference is normalization, forward and postprocessing (decode, NMS) in eval mode, with both classifiers' bias set to
`--score-bias` so that, as with a trained model, many candidates pass the score threshold. The two models run alternately, after
`--warmup` untimed runs each, and the table gives the median of `--runs` and the ratio ours / torchvision (below 1: ours faster).

The SOLOv2 row: one image, forward, postprocess (matrix NMS, masks upsampled to the image) and `encode_masks` of every predicted mask, against
Mask R-CNN-R50-FPN's forward (RPN, box head, mask head, pasting masks into the image) and the same encoding of its masks thresholded at 0.5.
Both are random: SOLOv2's category bias and Mask R-CNN's box score threshold are set so that each returns its maximum of 100 instances.

    python benchmarks/detectors.py --size 512 --bs 2 --runs 10
"""
import argparse, os, platform, statistics, time

import torch
from torchvision.models.detection import fcos_resnet50_fpn, maskrcnn_resnet50_fpn, retinanet_resnet50_fpn

from visionnb.core import torch_threads
from visionnb.det.fcos import fcos_from_torchvision
from visionnb.det.retinanet import retinanet_from_torchvision
from visionnb.data.core import encode_masks
from visionnb.seg.solov2 import solov2

MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
CLASSES = 80


def random_targets(bs:int, size:int, objects:int, generator) -> list[dict]:
    xy = torch.rand(bs, objects, 2, generator=generator) * size * 0.7
    wh = 8 + torch.rand(bs, objects, 2, generator=generator) * size * 0.3
    labels = torch.randint(0, CLASSES, (bs, objects), generator=generator)
    return [dict(boxes=torch.cat([xy[i], xy[i] + wh[i]], 1), labels=labels[i]) for i in range(bs)]


def their_train_step(model, optimizer, images, targets):
    loss = sum(model(list(images), targets).values())
    optimizer.zero_grad(); loss.backward(); optimizer.step()


def our_train_step(model, optimizer, images, targets):
    loss = sum(model.loss(model((images - MEAN) / STD), targets).values())
    optimizer.zero_grad(); loss.backward(); optimizer.step()


def their_inference(model, images):
    with torch.no_grad(): return model(list(images))


def our_inference(model, images):
    with torch.no_grad(): return model.postprocess(model((images - MEAN) / STD), [tuple(images.shape[-2:])] * len(images))


def alternate(cases:dict, runs:int, warmup:int) -> dict:
    "Median seconds of each zero-argument callable in `cases`, run in turns."
    times = {name: [] for name in cases}
    for i in range(warmup + runs):
        for name, fn in cases.items():
            start = time.perf_counter(); fn(); elapsed = time.perf_counter() - start
            if i >= warmup: times[name].append(elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def pair(name:str, builder, converter, args) -> list[tuple]:
    "Rows (case, ours, torchvision) for one detector."
    torch.manual_seed(0)
    theirs = builder(weights=None, weights_backbone=None, num_classes=CLASSES, min_size=args.size, max_size=args.size)
    ours = converter(theirs, [str(i) for i in range(CLASSES)])
    with torch.no_grad():   # a trained detector's scores pass the threshold in many places; random ones sit at 0.01 and leave NMS idle
        for model in (theirs, ours): model.head.classification_head.cls_logits.bias.fill_(args.score_bias)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.bs, 3, args.size, args.size, generator=generator)
    targets = random_targets(args.bs, args.size, args.objects, generator)
    rows = []
    theirs.train(); ours.train()
    opt_theirs, opt_ours = (torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for m in (theirs, ours))
    train = alternate({'ours': lambda: our_train_step(ours, opt_ours, images, targets),
                       'theirs': lambda: their_train_step(theirs, opt_theirs, images, targets)}, args.runs, args.warmup)
    rows.append((f'{name} training step, batch {args.bs}', train['ours'], train['theirs']))
    theirs.eval(); ours.eval()
    image = images[:1]
    infer = alternate({'ours': lambda: our_inference(ours, image), 'theirs': lambda: their_inference(theirs, image)}, args.runs, args.warmup)
    rows.append((f'{name} inference + postprocess, batch 1', infer['ours'], infer['theirs']))
    return rows


def segmentation_row(args) -> tuple:
    "(case, ours, torchvision, instances of each) for SOLOv2-R50 against Mask R-CNN-R50, one image, masks encoded as RLE."
    torch.manual_seed(0)
    ours = solov2([str(i) for i in range(CLASSES)], 'resnet50').eval()
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=CLASSES + 1, min_size=args.size, max_size=args.size).eval()
    with torch.no_grad(): ours.head.category.bias.fill_(-1.5)   # sigmoid(-1.5) = 0.18, above the 0.1 threshold: matrix NMS has work
    theirs.roi_heads.score_thresh = 0.   # random softmax scores (about 1/81) would stay under 0.05 and leave the mask head idle
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    found = {}
    def our_run():
        predictions = our_inference(ours, image)
        found['ours'] = [encode_masks(p['masks'].numpy()) for p in predictions][0]
    def their_run():
        predictions = their_inference(theirs, image)
        found['theirs'] = [encode_masks((p['masks'][:, 0] > 0.5).numpy()) for p in predictions][0]
    times = alternate({'ours': our_run, 'theirs': their_run}, args.runs, args.warmup)
    return ('SOLOv2-R50 vs Mask R-CNN-R50, inference + postprocess + RLE, batch 1', times['ours'], times['theirs'], len(found['ours']), len(found['theirs']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--bs', type=int, default=2)
    parser.add_argument('--objects', type=int, default=8, help='objects per training image')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--score-bias', type=float, default=-2.5, help='classifier bias of both models: sigmoid(-2.5) = 0.08, so postprocessing has work')
    args = parser.parse_args()
    with torch_threads(args.threads):
        rows = pair('FCOS-R50-FPN', fcos_resnet50_fpn, fcos_from_torchvision, args)
        rows += pair('RetinaNet-R50-FPN', retinanet_resnet50_fpn, retinanet_from_torchvision, args)
        segmentation = segmentation_row(args)
    print(f'visionnb vs torchvision detectors at {args.size} x {args.size} px, {CLASSES} classes, median of {args.runs} runs after {args.warmup} warm-up\n')
    print('| case | ours (s) | torchvision (s) | ratio |\n|---|---|---|---|')
    for case, ours, theirs in rows: print(f'| {case} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |')
    case, ours, theirs, n_ours, n_theirs = segmentation
    print(f'| {case} ({n_ours} and {n_theirs} instances) | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |')
    print(f'\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads')


if __name__ == '__main__':
    main()
