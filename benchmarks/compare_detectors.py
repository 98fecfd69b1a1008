"""The dense detectors of visionnb side by side: same backbone, data, batches, schedule and budget; AP, AP50, APs, time per epoch, latency.

Every detector is built by `create_detector` on the same ResNet-18 (`--widths`), the same FPN width (`--channels`) and head depth
(`--convs`), from the same seed, and trained by `det_learner` with fastai's one-cycle schedule for the same number of epochs on the
same batches (the seed is reset before each fit, so the shuffles and augmentations repeat). Each is then scored with pycocotools
(`coco_metrics`) on the validation images (original pixels) and timed on single-image inference including postprocessing.

`--assigners` runs the experiment that motivates ATSS: the ATSS network (one anchor per location, centerness) trained with
RetinaNet's max-IoU assignment, with FCOS's assignment and with its own.

    python benchmarks/compare_detectors.py --data shapes --epochs 6
    python benchmarks/compare_detectors.py --data bccd --epochs 8
    python benchmarks/compare_detectors.py --data shapes --archs atss --assigners
"""
import argparse, os, platform, statistics, time
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.torch_core import set_seed

from visionnb.core import torch_threads
from visionnb.data.check import check_dataset
from visionnb.data.loaders import det_dls
from visionnb.data.shapes import shapes_records
from visionnb.data.voc import voc_records
from visionnb.learner.registry import DETECTORS
from visionnb.learner.det import det_learner
from visionnb.metrics import coco_metrics
from visionnb.models.backbone import Backbone

BCCD = Path(__file__).resolve().parents[2]/'shared'/'datasets'/'bccd'


class TrainTimer(Callback):
    "Seconds spent in the training phase of each epoch (the validation pass left out)."
    order = 100
    def before_fit(self): self.seconds = []
    def before_train(self): self.start = time.perf_counter()
    def after_train(self): self.seconds.append(time.perf_counter() - self.start)


def load_data(args):
    "Train and valid records of `--data`: the embedded shapes set, or bccd checked with policy 'fix' and split by `--seed`."
    if args.data == 'shapes': return shapes_records(args.shapes_size, 'train'), shapes_records(args.shapes_size, 'valid')
    records, report = check_dataset(voc_records(args.bccd, split='trainval'), policy='fix')
    print(report.summary_line())
    return records.split(args.valid_fraction, seed=args.seed)


def model_kwargs(arch:str, assigner:str|None, args) -> dict:
    kwargs = dict(channels=args.channels) if arch == 'cornernet' else dict(channels=args.channels, num_convs=args.convs)   # one map, no towers
    if arch == 'retinanet': kwargs['version'] = 2   # GroupNorm head: v1's plain head diverges from scratch under Adam
    if assigner: kwargs['assigner'] = assigner
    return kwargs


@torch.no_grad()
def latency(model, image:torch.Tensor, runs:int, warmup:int=2) -> float:
    "Median seconds of forward + postprocess on a batch of one."
    model.eval()
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        model.postprocess(model(image), [tuple(image.shape[-2:])])
        if i >= warmup: times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(arch:str, assigner:str|None, dls, args) -> dict:
    set_seed(args.seed)
    dls.train.rng.seed(args.seed)   # the DataLoader drew its shuffling seed when it was made: every detector sees the same batches
    body = Backbone('resnet18', channels=tuple(args.widths))
    learn = det_learner(dls, arch, body, model_kwargs=model_kwargs(arch, assigner, args), metrics=None, cbs=TrainTimer())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.epochs, args.lr)
    epoch_seconds = statistics.mean(learn.train_timer.seconds)   # before `validate`, which starts the timer's fit afresh
    coco = coco_metrics()   # scored once, after training: the same pycocotools evaluation as the progress table
    learn.metrics = coco
    with learn.no_bar(): learn.validate()
    metrics = coco[0].evaluator.stats
    image = dls.valid.one_batch()[0][:1]
    return dict(metrics, epoch_seconds=epoch_seconds, latency=latency(learn.model, image, args.runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', choices=('shapes', 'bccd'), default='shapes')
    parser.add_argument('--shapes-size', default='default', choices=('tiny', 'small', 'default'))
    parser.add_argument('--bccd', default=str(BCCD), help='the bccd folder (Pascal VOC layout)')
    parser.add_argument('--valid-fraction', type=float, default=0.2)
    parser.add_argument('--archs', nargs='+', default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument('--assigners', action='store_true', help="ATSS's network with each assignment rule instead of the archs")
    parser.add_argument('--widths', type=int, nargs=4, default=[32, 64, 128, 256], help='ResNet-18 stage widths')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--convs', type=int, default=2)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--bs', type=int, default=8)
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--lr', type=float, default=1e-2)
    parser.add_argument('--runs', type=int, default=10, help='timed inference runs')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    train, valid = load_data(args)
    dls = det_dls(train, valid, size=args.size, bs=args.bs, num_workers=0)
    runs = [('atss', rule) for rule in ('max_iou', 'fcos', 'atss')] if args.assigners else [(arch, None) for arch in args.archs]
    results = {}
    with torch_threads(args.threads):
        for arch, assigner in runs:
            name = f'{arch} ({assigner} assignment)' if assigner else arch
            results[name] = run(arch, assigner, dls, args)
            print(f'{name} done: AP {results[name]["AP"]:.3f}', flush=True)

    data = f"shapes '{args.shapes_size}'" if args.data == 'shapes' else 'bccd'
    print(f'\n{data}: {len(train)} train / {len(valid)} valid images at {args.size} px; ResNet-18 {tuple(args.widths)} from random init, '
          f'FPN {args.channels}, {args.convs}-conv heads; {args.epochs} epochs, bs {args.bs}, fit_one_cycle (Adam) lr {args.lr}, seed {args.seed}\n')
    print('| detector | AP | AP50 | APs | train s / epoch | latency (ms, bs 1) |\n|---|---|---|---|---|---|')
    for name, r in results.items():
        print(f"| {name} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['APs']:.3f} | {r['epoch_seconds']:.0f} | {1000 * r['latency']:.0f} |")
    print(f'\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads')


if __name__ == '__main__':
    main()
