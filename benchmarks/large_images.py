"""Peak memory and time of predicting one large photo: visionnb's file path against the same image given as a full-size tensor.

`predict_detections(model, [path])` reads a file reduced for the network's input: a JPEG is decoded at 1/2, 1/4 or 1/8 of its
size by PIL's `draft`, any image is then reduced by an integer factor with PIL's box filter while it stays at least twice the
input size, and only that copy becomes a tensor for the final antialiased resize. The reference is what the pipeline did before:
the whole image as a `uint8` tensor (`load_image` then `pil_to_tensor`), resized from full size. Both give boxes in the original
pixels. Each case runs in a fresh process (so its peak resident memory, `ru_maxrss`, is its own), `--runs` times; the table gives
the median time of one prediction (the model is built before the clock starts) and the peak memory of the process, the model and
PyTorch included.

The model is the main job's: GFL on a half-width ResNet-18 with a 64-channel FPN, at 160 px, random weights (the numbers do not
depend on them). The photos are smooth gradients with a few ellipses, saved as JPEG (quality 90) and PNG.

    python benchmarks/large_images.py --sizes 2000 4000 8000 --runs 3
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

CHILD = r'''
import json, resource, sys, time, torch
from torchvision.transforms.v2 import functional as TF
from visionnb.data.core import load_image
from visionnb.learner.det import create_detector, predict_detections
torch.set_num_threads(1)
path, mode = sys.argv[1], sys.argv[2]
model = create_detector('gfl', ['a', 'b', 'c'], 'resnet18', channels=64, backbone_kwargs=dict(channels=(32, 64, 128, 256))).eval()
model.config['size'] = 160
start = time.perf_counter()
item = path if mode == 'file' else TF.pil_to_tensor(load_image(path))
(prediction,) = predict_detections(model, [item], size=160)
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds=seconds, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, orig=list(prediction['orig_size']))))
'''


def photo(path:Path, side:int):
    "A smooth `side` x `side * 3 // 4` picture with a few shapes."
    from PIL import Image, ImageDraw
    w, h = side, side * 3 // 4
    img = Image.linear_gradient('L').resize((w, h)).convert('RGB')
    draw = ImageDraw.Draw(img)
    for i in range(6): draw.ellipse([w * i / 8, h * i / 9, w * i / 8 + w / 5, h * i / 9 + h / 6], fill=(255, 40 * i, 0))
    img.save(path, quality=90) if path.suffix == '.jpg' else img.save(path)


def measure(path:Path, mode:str) -> dict:
    "One prediction in a fresh process: seconds and peak MB."
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, '-c', CHILD, str(path), mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[2000, 4000, 8000])
    p.add_argument('--formats', nargs='+', default=['.jpg', '.png'])
    p.add_argument('--runs', type=int, default=3)
    args = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}; one thread per process\n")
    print('| image | ours: s | full-size tensor: s | time ratio | ours: peak MB | full-size tensor: peak MB | memory ratio |')
    print('|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sizes:
            for suffix in args.formats:
                path = Path(folder)/f'photo{side}{suffix}'
                photo(path, side)
                rows = {mode: [measure(path, mode) for _ in range(args.runs)] for mode in ('file', 'full')}
                t = {m: statistics.median(r['seconds'] for r in rows[m]) for m in rows}
                mb = {m: max(r['peak_mb'] for r in rows[m]) for m in rows}
                print(f"| {side}x{side * 3 // 4} {suffix[1:].upper()} | {t['file']:.2f} | {t['full']:.2f} | {t['full'] / t['file']:.1f} | "
                      f"{mb['file']:.0f} | {mb['full']:.0f} | {mb['full'] / mb['file']:.1f} |", flush=True)
                path.unlink()


if __name__ == '__main__': main()
