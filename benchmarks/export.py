"""Inference latency of a detector in PyTorch (eager) against its ONNX export run by ONNX Runtime on the CPU, postprocessing included.

An FCOS-ResNet50-FPN with random weights (`create_detector('fcos', 80 classes, 'resnet50')`), classifier bias set to `--score-bias`
so that, as with a trained model, many candidates pass the score threshold and NMS has work to do. PyTorch runs `model.predict`
(forward, decode, NMS); ONNX Runtime runs the file `export_onnx` writes (static shape, decoding and NMS in the graph). Both get the
same normalized batch of `--size` px, `--threads` intra-op threads each; the two run alternately after `--warmup` untimed runs,
and the table gives the median of `--runs` and the ratio ONNX Runtime / PyTorch (below 1: ONNX Runtime faster).

    python benchmarks/export.py --size 640 --runs 10 --threads 2
"""
import argparse, os, platform, statistics, tempfile, time
from pathlib import Path

import torch

from visionnb.core import torch_threads
from visionnb.learner.det import create_detector
from visionnb.callbacks.export import OnnxModel, export_onnx, onnx_parity


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--bs', type=int, default=1)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--score-bias', type=float, default=-2.)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_detector('fcos', [f'class{i}' for i in range(80)], 'resnet50').eval()
    with torch.no_grad(): model.head.classification_head.cls_logits.bias.fill_(args.score_bias)
    images = torch.randn(args.bs, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as folder, torch_threads(args.threads):
        start = time.perf_counter()
        path = export_onnx(model, Path(folder) / 'fcos.onnx', image_size=args.size, batch_size=args.bs)
        export_s = time.perf_counter() - start
        runner = OnnxModel(path, threads=args.threads)
        cases = dict(pytorch=lambda: model.predict(images), onnxruntime=lambda: runner(images))
        for _ in range(args.warmup):
            for run in cases.values(): run()
        times = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, run in cases.items():
                start = time.perf_counter(); run(); times[name].append(time.perf_counter() - start)
        parity = onnx_parity(model, path, images, runs=1, threads=args.threads)
    torch_ms, onnx_ms = (statistics.median(times[k]) * 1000 for k in ('pytorch', 'onnxruntime'))
    print(f'FCOS-ResNet50-FPN (random weights, classifier bias {args.score_bias}), {args.size} px, batch {args.bs}, {args.threads} threads, '
          f'median of {args.runs} runs after {args.warmup} warm-up; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'torch {torch.__version__}; export took {export_s:.1f} s\n')
    print('| case | PyTorch eager (ms) | ONNX Runtime (ms) | ratio ORT / PyTorch |')
    print('|---|---|---|---|')
    print(f'| predict incl. postprocess | {torch_ms:.1f} | {onnx_ms:.1f} | {onnx_ms / torch_ms:.2f} |')
    print(f"\nparity: {parity['detections']} detections, count agreement {parity['count_agreement']:.2f}, label agreement "
          f"{parity['label_agreement']:.3f}, max box diff {parity['box_diff']:.2e} px, max score diff {parity['score_diff']:.2e}")


if __name__ == '__main__': main()
