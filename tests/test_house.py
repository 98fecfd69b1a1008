"""The house rule: a model answers for itself, and joins the library with one registry line.

`toy_detector.Dot` is defined outside the package; one `DETECTORS` entry makes it a detector of visionnb. Then the
library as it is trains it (det_learner and the `visionnb train` command), exports and reloads it, runs it in ONNX
Runtime, draws its CAMs and splits its loss by pyramid level, asking the model, never its class name.
"""
import re
from pathlib import Path

import pytest
import torch

from visionnb.core import torch_threads
from visionnb.data.core import Records
from visionnb.data.loaders import det_dls
from visionnb.data.shapes import shapes_records
from visionnb.learner.registry import DETECTORS
from visionnb.learner.det import det_learner, export_detector, load_detector

ROOT = Path(__file__).resolve().parents[1]
TOY = ('toy_detector', 'dot', 'Dot')   # the one line a new model adds to the registry


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(DETECTORS, 'dot', TOY)
    with torch_threads(1): yield


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp('visionnb_home')
    train, valid = shapes_records('tiny', 'train', root=root), shapes_records('tiny', 'valid', root=root)
    return Records(train.items[:16], train.vocab), Records(valid.items[:4], valid.vocab)


@pytest.fixture
def learn(records):
    torch.manual_seed(0)
    dls = det_dls(*records, size=96, bs=4, augment=False)
    learn = det_learner(dls, 'dot', backbone='resnet18', metrics=[], precision='fp32',
                        model_kwargs=dict(backbone_kwargs=dict(channels=(16, 16, 32, 32)), channels=16, num_convs=1))
    learn.fit(1, 1e-3)
    return learn


def test_it_trains_and_its_export_loads(learn, tmp_path):
    assert all(torch.isfinite(torch.tensor(v)) for v in learn.recorder.values[-1])
    model = load_detector(export_detector(learn, tmp_path / 'dot.pth'))
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad(): before, after = learn.model.eval()(images), model(images)
    assert model.config['arch'] == 'dot' and type(model).__name__ == 'Dot'
    for k in ('cls_logits', 'bbox_regression'): assert torch.equal(before[k], after[k])


def test_it_exports_to_onnx_and_agrees(learn, tmp_path):
    pytest.importorskip('onnxruntime')
    from visionnb.deploy.onnx import export_onnx, onnx_parity
    model, images = learn.model.eval(), torch.randn(2, 3, 96, 96)
    raw = onnx_parity(model, export_onnx(model, tmp_path / 'raw.onnx', image_size=96, batch_size=2, postprocess=False), images, runs=1, threads=1)
    diffs = {k: v for k, v in raw.items() if k.endswith('_diff')}
    assert set(diffs) == {'cls_logits_diff', 'bbox_regression_diff', 'priors_diff'} and max(diffs.values()) < 1e-4, raw
    # decoded: a threshold in the widest gap between its own scores, so that float noise cannot move a detection across it
    model.score_thresh = 0.
    scores = torch.cat([p['scores'] for p in model.predict(images)]).sort().values[-40:]
    gap = (scores[1:] - scores[:-1]).argmax()
    model.score_thresh = float(scores[gap] + scores[gap + 1]) / 2
    report = onnx_parity(model, export_onnx(model, tmp_path / 'dot.onnx', image_size=96, batch_size=2), images, runs=1, threads=1)
    assert report['detections'] > 0 and report['count_agreement'] == 1 and report['score_diff'] < 1e-4, report


def test_its_cams_and_level_losses(learn):
    from visionnb.callbacks.cam import cam_layers, compute_cams
    from visionnb.tools.analysis import level_losses, model_assignment
    model = learn.model.eval()
    layers = cam_layers(model)
    assert list(layers)[0] == 'backbone.body.layer4' and sum('pyramid level' in d for d in layers.values()) == 3
    images, targets = learn.dls.valid.one_batch()
    cams = compute_cams(model, images, layer=[n for n in layers if n.startswith('neck.')][0])
    assert cams.shape == (len(images), *images.shape[-2:]) and 0 <= cams.min() and cams.max() <= 1
    outputs = model(images)
    split = level_losses(model, outputs, targets)
    assert list(split.index) == ['P3', 'P4', 'P5', 'total']
    torch.testing.assert_close(torch.tensor(split.iloc[:3].sum().values), torch.tensor(split.loc['total'].values), rtol=1e-4, atol=1e-5)
    assigned = model_assignment(model, outputs, targets)
    assert assigned.shape == outputs['cls_logits'].shape[:2] and (assigned >= 0).any()


def test_the_command_trains_it(tmp_path, monkeypatch):
    from visionnb.cli import JsonErrorParser, main
    monkeypatch.setenv('VISIONNB_HOME', str(tmp_path / 'home'))
    monkeypatch.setattr(JsonErrorParser, 'json_errors', False)   # `main` sets it for `--json`: restored after the test
    code = main(['train', '--arch', 'dot', '--shapes-size', 'tiny', '--size', '96', '--epochs', '1', '--bs', '4', '--channels', '16',
                 '--convs', '1', '--out', str(tmp_path / 'run'), '--json', '--precision', 'fp32'])
    assert code == 0
    assert load_detector(tmp_path / 'run' / 'model.pth').config['arch'] == 'dot'


def test_no_outer_module_asks_a_model_its_class():
    "The outer layers hold no `isinstance` check on a concrete model class and no branch on an arch name."
    classes = ('FCOS|RetinaNet|ATSS|GFL|PAA|CornerNet|SOLOv2|DenseDetector|FPN|PAFPN|HourglassNet|ResNet|PlainConvNet|'
               'ATSSHead|FCOSHead|RetinaNetHead|SOLOv2Head|CornerHead|Backbone')
    by_class = re.compile(rf'isinstance\([^)]*\b({classes})\b')
    by_name = re.compile(r"\barch\s*(==|!=|in)\s*['\"(]")
    outer = [ROOT / 'visionnb' / 'cli.py', *[p for d in ('callbacks', 'tools', 'learner', 'deploy') for p in (ROOT / 'visionnb' / d).glob('*.py')]]
    found = [f'{p.relative_to(ROOT)}:{i}: {line.strip()}' for p in outer for i, line in enumerate(p.read_text().splitlines(), 1)
             if by_class.search(line) or by_name.search(line)]
    assert not found, '\n'.join(found)
