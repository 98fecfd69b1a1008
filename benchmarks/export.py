"""Inference latency of a detector in PyTorch (eager) against its ONNX export run by ONNX Runtime on the CPU, postprocessing included.

An FCOS-ResNet50-FPN with random weights (`create_detector('fcos', 80 classes, 'resnet50')`), classifier bias set to `--score-bias`
so that, as with a trained model, many candidates pass the score threshold and NMS has work to do. PyTorch runs `model.predict`
(forward, decode, NMS); ONNX Runtime runs the file `export_onnx` writes (static shape, decoding and NMS in the graph). Both get the
same normalized batch of `--size` px, `--threads` intra-op threads each; the two run alternately after `--warmup` untimed runs,
and the table gives the median of `--runs` and the ratio ONNX Runtime / PyTorch (below 1: ONNX Runtime faster).

    python benchmarks/export.py --size 640 --runs 10 --threads 2

Where TensorRT and a CUDA GPU are present, a second table: the same FCOS on the GPU, PyTorch eager FP32 against TensorRT engines in
FP32, FP16 and INT8 (calibrated on `--calibration-batches` batches of shapes images, NMS by TensorRT's EfficientNMS_TRT plugin), each
synchronized, median of `--runs`. With `--detector FILE` (a detector file from `visionnb train`), a third table gives the COCO AP of that
trained detector on the embedded shapes validation set (`--shapes`), eager against each engine, with its latency at its own size.
Elsewhere the output says in one line why the TensorRT rows are absent.

    python benchmarks/export.py --size 640 --runs 50 --detector models/gfl.pth
"""
import argparse, os, platform, statistics, tempfile, time
from pathlib import Path

import torch

from visionnb.core import torch_threads
from visionnb.learner.det import create_detector
from visionnb.deploy.onnx import OnnxModel, detection_agreement, export_onnx, onnx_parity
from visionnb.deploy.tensorrt import TensorRTModel, TENSORRT_PRECISIONS, export_tensorrt, tensorrt_status


def _gpu_ms(fn, runs:int, warmup:int) -> float:
    "Median milliseconds of `fn`, each run waited for on the GPU."
    for _ in range(warmup): fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter(); fn(); torch.cuda.synchronize(); times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def shapes_batches(split:str, size:int, bs:int, shapes:str, limit:int):
    "Normalized batches of the embedded shapes images (the detector input pipeline at `size`), for INT8 calibration."
    from visionnb.data.shapes import shapes_records
    from visionnb.learner.det import detection_inputs, image_tensor
    files = [r.file for r in shapes_records(shapes, split)][:bs * limit]
    return [detection_inputs([image_tensor(f)[0] for f in files[i:i + bs]], size=size)[0] for i in range(0, len(files), bs)]


def tensorrt_rows(model, images, args, folder:Path) -> list[tuple]:
    "Rows (case, ms, speed-up over eager, agreement) of eager FP32 and each TensorRT precision on `images` (random-weight FCOS)."
    model, images = model.cuda(), images.cuda()
    eager_ms = _gpu_ms(lambda: model.predict(images), args.runs, args.warmup)
    rows, expected = [('PyTorch eager FP32', eager_ms, 1., '')], [{k: v.cpu() for k, v in p.items()} for p in model.predict(images)]
    calibration = shapes_batches('train', args.size, args.bs, args.shapes, args.calibration_batches)
    for precision in TENSORRT_PRECISIONS:
        status = tensorrt_status(precision)
        if status: rows.append((f'TensorRT {precision}', float('nan'), float('nan'), f'not built: {status}')); continue
        engine = export_tensorrt(model, folder / f'fcos_{precision}.engine', precision, calibration, image_size=args.size, batch_size=args.bs)
        runner = TensorRTModel(engine)
        ms = _gpu_ms(lambda: runner(images), args.runs, args.warmup)
        found = runner(images)
        agreement = detection_agreement(expected, [{k: found[k][i, :n].cpu() for k in ('boxes', 'scores', 'labels')} for i, n in enumerate(found['num_detections'].tolist())])
        rows.append((f'TensorRT {precision}', ms, eager_ms / ms, f"labels {agreement['label_agreement']:.3f}, boxes {agreement['box_diff']:.2f} px"))
    return rows


def ap_rows(args, folder:Path) -> list[tuple]:
    "Rows (case, AP, AP50, ms per batch) of the trained detector `--detector` on the shapes validation set, eager FP32 and each engine."
    from visionnb.data.shapes import shapes_records
    from visionnb.learner.det import load_detector, predict_detections
    from visionnb.metrics import coco_evaluate
    model = load_detector(args.detector).cuda().eval()
    records = shapes_records(args.shapes, 'valid')
    files, size = [r.file for r in records], model.config['size']
    batch = shapes_batches('valid', size, args.bs, args.shapes, 1)[0].cuda()
    evaluate = lambda predictions: coco_evaluate({r.image_id: p for r, p in zip(records, predictions)}, records)
    scores = evaluate(predict_detections(model, files, bs=8))
    rows = [('PyTorch eager FP32', scores['AP'], scores['AP50'], _gpu_ms(lambda: model.predict(batch), args.runs, args.warmup))]
    calibration = shapes_batches('train', size, 8, args.shapes, args.calibration_batches)
    for precision in TENSORRT_PRECISIONS:
        if tensorrt_status(precision): continue
        engine = export_tensorrt(model, folder / f'trained_{precision}.engine', precision, calibration, dynamic=True,
                                 opt_shape=(args.bs, size, size), max_shape=(8, size, size))
        runner = TensorRTModel(engine)
        scores = evaluate(runner.predict(files, bs=8))
        rows.append((f'TensorRT {precision}', scores['AP'], scores['AP50'], _gpu_ms(lambda: runner(batch), args.runs, args.warmup)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--bs', type=int, default=1)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--score-bias', type=float, default=-2.)
    parser.add_argument('--detector', help='a trained detector file (visionnb train) for the AP table on the GPU')
    parser.add_argument('--shapes', default='quick', help='embedded shapes set for calibration and AP')
    parser.add_argument('--calibration-batches', type=int, default=16)
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
    status = tensorrt_status()
    if status is not None:
        print(f'\nTensorRT rows absent: {status}')
        return
    with tempfile.TemporaryDirectory() as folder:
        rows = tensorrt_rows(model, images, args, Path(folder))
        print(f'\nGPU: {torch.cuda.get_device_name()}, TensorRT {__import__("tensorrt").__version__}; same model, {args.size} px, batch {args.bs}, '
              f'median of {args.runs} synchronized runs after {args.warmup} warm-up\n')
        print('| case | latency (ms) | speed-up over eager FP32 | agreement with eager |')
        print('|---|---|---|---|')
        for case, ms, speedup, agreement in rows: print(f'| {case} | {ms:.2f} | {speedup:.2f} | {agreement} |')
        if args.detector:
            print(f'\n{args.detector} on shapes {args.shapes!r} valid (COCO AP; latency of a batch of {args.bs} at its own size)\n')
            print('| case | AP | AP50 | latency (ms) |')
            print('|---|---|---|---|')
            for case, ap, ap50, ms in ap_rows(args, Path(folder)): print(f'| {case} | {ap:.3f} | {ap50:.3f} | {ms:.2f} |')


if __name__ == '__main__': main()
