"""Forward + backward time of our `resnet50` against timm's `resnet50` with the same weights.

Both models run the same operations (same module structure, `visionnb.models.resnet.from_timm`), so the ratio
ours / reference measures only the cost of our Python code around them. Each case: batch `--bs` of random
`--size` px images, `--warmup` untimed iterations, then the median of `--repeats` timed iterations of
forward, loss (sum of logits), backward. Models are timed alternately in the same process.

    python benchmarks/backbones.py                       # CPU
    python benchmarks/backbones.py --device cuda         # GPU (synchronised timing)
"""
import argparse, os, platform, statistics, time
from pathlib import Path

import timm
import torch

from visionnb.models.resnet import from_timm


def step_seconds(model, x, device) -> float:
    "Seconds for one forward + backward of `model` on `x`."
    if device.type == 'cuda': torch.cuda.synchronize(device)
    start = time.perf_counter()
    model(x).sum().backward()
    if device.type == 'cuda': torch.cuda.synchronize(device)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def median_times(models, x, device, warmup, repeats) -> list:
    "Median step time per model, the models interleaved so that both see the same machine load."
    for _ in range(warmup):
        for m in models: step_seconds(m, x, device)
    times = [[] for _ in models]
    for _ in range(repeats):
        for t, m in zip(times, models): t.append(step_seconds(m, x, device))
    return [statistics.median(t) for t in times]


def machine(device) -> str:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')),
               platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    gpu = f', GPU {torch.cuda.get_device_name(device)}' if device.type == 'cuda' else ''
    return (f'{cpu}, {os.cpu_count()} CPUs ({torch.get_num_threads()} torch threads){gpu}, torch {torch.__version__}, '
            f'timm {timm.__version__}, Python {platform.python_version()}')


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='resnet50', help='variant name, as in RESNET_VARIANTS and timm')
    p.add_argument('--bs', type=int, default=8, help='batch size')
    p.add_argument('--size', type=int, default=224, help='image side (px)')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations per model')
    p.add_argument('--repeats', type=int, default=5, help='timed iterations per model; the median is reported')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    reference = timm.create_model(args.model).to(device).train()
    ours = from_timm(reference).to(device).train()
    print(f'Machine: {machine(device)}\n')
    print(f'{args.model} forward + backward, batch {args.bs}, {args.size} px, train mode, {args.warmup} warm-up, '
          f'median of {args.repeats} (seconds per step)\n')
    print('| case | ours (s) | reference timm (s) | ratio |')
    print('|---|---:|---:|---:|')
    for case, memory_format in (('float32, NCHW', torch.contiguous_format), ('float32, channels_last', torch.channels_last)):
        ours, reference = ours.to(memory_format=memory_format), reference.to(memory_format=memory_format)
        x = torch.randn(args.bs, 3, args.size, args.size, device=device).contiguous(memory_format=memory_format)
        ours_s, reference_s = median_times([ours, reference], x, device, args.warmup, args.repeats)
        print(f'| {case} | {ours_s:.3f} | {reference_s:.3f} | {ours_s / reference_s:.2f} |', flush=True)


if __name__ == '__main__': main()
