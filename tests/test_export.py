"ONNX round trip of a detector file: `export_detector` -> `load_detector` -> `export_onnx` -> ONNX Runtime on real image files, against `predict_detections`."
import pytest
import torch
from torch import nn
from fastai.torch_core import set_seed
from visionnb.core import torch_threads
from visionnb.data.shapes import shapes_records
from visionnb.learner.det import create_detector, export_detector, load_detector, predict_detections
from visionnb.callbacks.export import OnnxModel, export_onnx


def lively(model):
    "Spread the random head predictors so that scores are distinct (ties would make NMS's choices arbitrary)."
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and any(k in name for k in ('cls_logits', 'bbox_reg', 'ctrness')):
                m.weight.normal_(0, 0.05)
                if 'cls_logits' in name: m.bias.fill_(-0.5)
    return model


@pytest.fixture(scope='module')
def files(): return [r.file for r in shapes_records('tiny', 'valid')][:4]


@pytest.mark.parametrize('dynamic', [False, True])
def test_onnx_file_predicts_like_the_loaded_detector(tmp_path, files, dynamic):
    set_seed(0)
    vocab = ['circle', 'square', 'triangle', 'star', 'cross', 'heart']
    model = lively(create_detector('fcos', vocab, 'resnet18', channels=32, num_convs=1, score_thresh=0.45)).eval()
    loaded = load_detector(export_detector(model, tmp_path / 'fcos.pth', size=128))
    onnx_file = export_onnx(loaded, tmp_path / 'fcos.onnx', dynamic=dynamic, batch_size=2)   # batch 2: GroupNorm needs 2+ values on the 1x1 P7 of 128 px
    runner = OnnxModel(onnx_file, threads=1)
    assert runner.vocab == vocab and runner.metadata['size'] == 128 and runner.metadata['arch'] == 'fcos'
    with torch_threads(1):
        expected = predict_detections(loaded, files, bs=2)
        found = runner.predict(files, bs=2)
    assert sum(len(e['boxes']) for e in expected) > 0
    for e, f in zip(expected, found):
        assert f['file'] == e['file'] and f['orig_size'] == e['orig_size'] and f['names'] == e['names']
        assert torch.equal(f['labels'], e['labels'])
        torch.testing.assert_close(f['boxes'], e['boxes'], atol=1e-2, rtol=0)   # original pixels
        torch.testing.assert_close(f['scores'], e['scores'], atol=1e-4, rtol=0)
