"""visionnb's FCOS against torchvision's FCOS on the real bccd blood-cell dataset, from the same random weights, same batches, same budget.

Both detectors are ResNet-18 + FPN (`--channels` wide, P3-P7, P6 from P5) with torchvision's FCOS head; ours is made from
torchvision's state dict, so the two start from identical weights. The bccd trainval images are checked (`policy='fix'`:
the two degenerate boxes are dropped and reported), split into train / valid (`--valid-fraction`, seeded), and every
training batch of `det_dls` goes to both models in turn (torchvision's gets it un-normalized, as a list, and its transform
neither resizes nor pads it again), with the same AdamW + one-cycle schedule. Both are then scored with `coco_evaluate` on
the validation images, in original pixels, at the same score threshold. Prints AP, AP50 and training seconds per model.

    python benchmarks/bccd.py --epochs 12 --size 320
"""
import argparse, os, platform, time
from pathlib import Path

import torch
from torchvision.models import resnet18
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from visionnb.core import torch_threads
from visionnb.data.check import check_dataset
from visionnb.data.loaders import det_dls
from visionnb.data.transforms import to_original
from visionnb.data.voc import voc_records
from visionnb.det.fcos import fcos, fcos_torchvision_keys
from visionnb.metrics import coco_evaluate

MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def torchvision_fcos(num_classes:int, channels:int, size:int, score_thresh:float) -> FCOS:
    "torchvision's FCOS on a ResNet-18 FPN of width `channels`, not resizing inputs of up to `size` px."
    body = resnet18()
    backbone = BackboneWithFPN(body, {'layer2': '0', 'layer3': '1', 'layer4': '2'}, [128, 256, 512], channels,
                               extra_blocks=LastLevelP6P7(channels, channels))
    return FCOS(backbone, num_classes, min_size=size, max_size=size, score_thresh=score_thresh)


def same_weights_ours(theirs:FCOS, vocab, channels:int, score_thresh:float):
    "Our FCOS of the same architecture, holding `theirs`' weights, its points placed as torchvision places them."
    ours = fcos(vocab, 'resnet18', channels=channels, score_thresh=score_thresh, prior_strides='torchvision')
    ours.load_state_dict(fcos_torchvision_keys(theirs.state_dict()))
    return ours


def our_loss(model, images, targets): return sum(model.loss(model(images), targets).values())
def their_loss(model, images, targets): return sum(model(list(images * STD + MEAN), targets).values())


@torch.no_grad()
def predictions(model, dl, theirs:bool) -> dict:
    "Validation detections of `model`, in original pixels, keyed by image id."
    model.eval()
    out = {}
    for images, targets in dl:
        sizes = [tuple(t['size']) for t in targets]
        if theirs: detections = model(list(images * STD + MEAN))   # in the frame of the padded inputs: ours, too
        else: detections = model.postprocess(model(images), sizes)
        for d, t in zip(detections, targets): out[int(t['image_id'])] = to_original(d, t['size'], t['orig_size'])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=str(Path(__file__).resolve().parents[2]/'shared'/'datasets'/'bccd'))
    parser.add_argument('--size', type=int, default=320)
    parser.add_argument('--bs', type=int, default=8)
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--valid-fraction', type=float, default=0.2)
    parser.add_argument('--score-thresh', type=float, default=0.05)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    records, report = check_dataset(voc_records(args.root, split='trainval'), policy='fix')
    print(report.summary_line())
    train, valid = records.split(args.valid_fraction, seed=args.seed)
    # padding to a multiple of P7's stride: torchvision derives strides as input size // feature size, equal to the true ones only then
    dls = det_dls(train, valid, size=args.size, bs=args.bs, pad_multiple=128)
    torch.manual_seed(args.seed)
    theirs = torchvision_fcos(len(records.vocab), args.channels, args.size, args.score_thresh)
    ours = same_weights_ours(theirs, records.vocab, args.channels, args.score_thresh)
    models = dict(visionnb=(ours, our_loss), torchvision=(theirs, their_loss))
    steps = args.epochs * len(dls.train)
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=1e-4) for name, (m, _) in models.items()}
    schedules = {name: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=args.lr, total_steps=steps) for name, o in optimizers.items()}
    seconds = dict.fromkeys(models, 0.)
    with torch_threads(args.threads):
        for epoch in range(args.epochs):
            for name, (model, _) in models.items(): model.train()
            for images, targets in dls.train:
                for name, (model, loss_fn) in models.items():
                    start = time.perf_counter()
                    loss = loss_fn(model, images, targets)
                    optimizers[name].zero_grad(); loss.backward(); optimizers[name].step(); schedules[name].step()
                    seconds[name] += time.perf_counter() - start
            print(f'epoch {epoch + 1}/{args.epochs} done', flush=True)
        results = {name: coco_evaluate(predictions(model, dls.valid, name == 'torchvision'), valid) for name, (model, _) in models.items()}

    print(f'\nFCOS ResNet-18 FPN-{args.channels} from random init on bccd: {len(train)} train / {len(valid)} valid images at {args.size} px, '
          f'{args.epochs} epochs, bs {args.bs}, AdamW one-cycle lr {args.lr}, score threshold {args.score_thresh}\n')
    print('| implementation | AP | AP50 | AP75 | training time (s) |\n|---|---|---|---|---|')
    for name, m in results.items(): print(f"| {name} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['AP75']:.3f} | {seconds[name]:.0f} |")
    print(f'\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads')


if __name__ == '__main__':
    main()
