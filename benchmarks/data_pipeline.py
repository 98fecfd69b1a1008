"""Images per second of the `det_dls` training DataLoader against a plain PyTorch DataLoader doing the same work.

Both loaders read the same records with `record_sample`, run the same torchvision v2 train pipeline
(`det_transforms`: scale jitter, crop, flip, colour jitter), pad each batch to a multiple of 32 and
normalise it. The reference is `torch.utils.data.DataLoader` with a `Dataset` and a `collate_fn`; ours goes
through fastai's `TfmdLists`, `TfmdDL` hooks and `Normalize`, so the ratio ours / reference is the cost of the
fastai layer. Timing: one warm-up batch (worker start), then `--batches` batches; median of `--repeats` runs.

    python benchmarks/data_pipeline.py --size 512 --bs 8 --batches 20 --workers 0 1 2 --datasets shapes bccd
"""
import argparse, os, platform, statistics, time
from pathlib import Path

import fastai
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from visionnb.data.loaders import det_dls, round_up
from visionnb.data.transforms import det_transforms, pad_sample, record_sample

BCCD = Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'bccd'
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


class ReferenceDataset(Dataset):
    "Records read with `record_sample` and passed through a v2 transform, as a plain PyTorch dataset."
    def __init__(self, records, tfm, masks): self.records, self.tfm, self.masks = records, tfm, masks
    def __len__(self): return len(self.records)
    def __getitem__(self, i): return self.tfm(*record_sample(self.records[i], self.masks))


def reference_collate(samples):
    "Pad to the batch's size rounded up to 32, stack the images, keep the targets per image."
    height, width = (round_up(max(image.shape[d] for image, _ in samples), 32) for d in (-2, -1))
    samples = [pad_sample((image, {**t, 'size': tuple(image.shape[-2:])}), height, width) for image, t in samples]
    return torch.stack([image.as_subclass(torch.Tensor) for image, _ in samples]), tuple(t for _, t in samples)


def reference_loader(records, size, bs, workers, masks):
    "The plain PyTorch DataLoader: same records, same v2 pipeline, same padding; normalisation applied per batch by the caller."
    ds = ReferenceDataset(records, det_transforms(size), masks)
    return DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers, collate_fn=reference_collate)


def normalized(batches):
    "The batches of a reference loader with images as normalised floats, as `det_dls` gives them."
    for images, targets in batches: yield (images.float().div_(255) - MEAN) / STD, targets


def images_per_second(make_batches, n_batches) -> float:
    "Images per second over `n_batches` batches after one warm-up batch (restarting the epoch if it runs out)."
    it = make_batches(); next(it)
    count, start = 0, time.perf_counter()
    for _ in range(n_batches):
        try: images, _ = next(it)
        except StopIteration: it = make_batches(); images, _ = next(it)
        count += len(images)
    return count / (time.perf_counter() - start)


def median_rate(make_batches, n_batches, repeats) -> float:
    return statistics.median(images_per_second(make_batches, n_batches) for _ in range(repeats))


def datasets(names):
    "(name, train records, valid records, masks) for each requested dataset that is available."
    for name in names:
        if name == 'shapes':
            from visionnb.data.shapes import shapes_records
            yield 'shapes default (masks)', shapes_records('default', 'train'), shapes_records('default', 'valid'), True
        elif name == 'bccd':
            if not BCCD.exists(): print(f'(bccd not found at {BCCD}; skipped)'); continue
            from visionnb.data.voc import voc_records
            train, valid = voc_records(BCCD).split(0.2)
            yield 'bccd (boxes)', train, valid, False
        else: raise SystemExit(f'unknown dataset {name!r}; use shapes or bccd')


def machine() -> str:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor()) \
        if Path('/proc/cpuinfo').exists() else platform.processor()
    return (f'{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), '
            f'torchvision {torchvision.__version__}, fastai {fastai.__version__}, Python {platform.python_version()}')


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=512, help='longer side of the images (px)')
    p.add_argument('--bs', type=int, default=8, help='batch size')
    p.add_argument('--batches', type=int, default=20, help='timed batches per run')
    p.add_argument('--repeats', type=int, default=3, help='runs per case; the median is reported')
    p.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2], help='DataLoader worker processes')
    p.add_argument('--datasets', nargs='+', default=['shapes', 'bccd'], help='shapes and/or bccd')
    p.add_argument('--threads', type=int, default=None, help='torch threads in the main process (default: torch default)')
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    print(f'Machine: {machine()}\n')
    print(f'DataLoader throughput, train pipeline with augmentation, size {args.size}, bs {args.bs}, '
          f'{args.batches} batches after 1 warm-up, median of {args.repeats}\n')
    print('| dataset | workers | ours (img/s) | reference (img/s) | ratio |')
    print('|---|---:|---:|---:|---:|')
    for name, train, valid, masks in datasets(args.datasets):
        for workers in args.workers:
            dls = det_dls(train, valid, size=args.size, bs=args.bs, num_workers=workers, masks=masks, device='cpu')
            ours = median_rate(lambda: iter(dls.train), args.batches, args.repeats)
            ref = reference_loader(train, args.size, args.bs, workers, masks)
            reference = median_rate(lambda: normalized(iter(ref)), args.batches, args.repeats)
            print(f'| {name} | {workers} | {ours:.1f} | {reference:.1f} | {ours / reference:.2f} |', flush=True)


if __name__ == '__main__': main()
