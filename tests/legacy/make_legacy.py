# How the files here were made, at commit e8d3932 (before the model protocol of issue 19): four small detectors, exported
# with export_detector, and their outputs on one fixed input. tests/test_legacy_checkpoints.py loads them with today's code.
# Run: python tests/legacy/make_legacy.py tests/legacy
import sys, torch
from pathlib import Path
from visionnb.learner.det import create_detector, export_detector, load_detector
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
vocab = ['circle', 'square', 'triangle']
small = dict(backbone='resnet18', backbone_kwargs=dict(channels=(8, 8, 16, 16)), channels=16)
keep = dict(score_thresh=0., max_detections=20)
archs = dict(fcos=dict(num_convs=1, **keep), gfl=dict(num_convs=1, **keep), cornernet=dict(pool_channels=8, max_detections=20),
             solov2=dict(num_convs=1, head_channels=16, mask_channels=16, kernel_channels=16, num_grids=(12, 10, 8, 6, 4), score_thresh=0., update_thresh=0., max_detections=20))
torch.manual_seed(0)
images = torch.randn(1, 3, 64, 96)
expected = {}
for arch, kwargs in archs.items():
    torch.manual_seed(1)
    model = create_detector(arch, vocab, **small, **kwargs).eval()
    export_detector(model, out / f'{arch}.pth', size=96)
    loaded = load_detector(out / f'{arch}.pth')
    with torch.no_grad(): raw = loaded(images)
    preds = loaded.postprocess(raw, [(64, 96)])
    expected[arch] = dict(raw={k: v for k, v in raw.items() if torch.is_tensor(v)}, predictions=preds)
    print(arch, (out / f'{arch}.pth').stat().st_size, [len(p['scores']) for p in preds])
torch.save(dict(images=images, expected=expected), out / 'outputs.pt')
print((out / 'outputs.pt').stat().st_size)
