"""Detectors exported before the model protocol (issue 19) still load and predict as they did.

tests/legacy holds four small detectors (FCOS, GFL, CornerNet, SOLOv2) written by `export_detector` at commit e8d3932
and their outputs then on one fixed input (tests/legacy/make_legacy.py made them). Today's `load_detector` must rebuild
each from its config and give the same raw outputs and detections. The comparison allows float noise of another CPU's
kernels; on the machine that made the files the outputs are bit-identical (the closing note of issue 19 shows it).
"""
from pathlib import Path

import pytest
import torch

from visionnb.learner.det import load_detector

LEGACY = Path(__file__).parent / 'legacy'
SAVED = torch.load(LEGACY / 'outputs.pt', weights_only=True)
CLOSE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope='module', params=sorted(SAVED['expected']))
def outputs(request):
    "`(arch, raw outputs, detections)` of the legacy file of one arch, loaded with today's code."
    model = load_detector(LEGACY / f'{request.param}.pth')
    images = SAVED['images']
    with torch.no_grad(): raw = model(images)
    return request.param, raw, model.postprocess(raw, [tuple(images.shape[-2:])] * len(images))


def test_raw_outputs_are_those_of_the_old_code(outputs):
    arch, raw, _ = outputs
    expected = SAVED['expected'][arch]['raw']
    assert sorted(k for k, v in raw.items() if torch.is_tensor(v)) == sorted(expected)
    for name, value in expected.items(): torch.testing.assert_close(raw[name], value, **CLOSE, msg=f'{arch} {name}')


def test_detections_are_those_of_the_old_code(outputs):
    arch, _, detections = outputs
    for got, want in zip(detections, SAVED['expected'][arch]['predictions'], strict=True):
        assert len(want['scores']) > 0, f'{arch}: the legacy file should predict something to compare'
        assert sorted(got) == sorted(want)
        torch.testing.assert_close(got['scores'], want['scores'], **CLOSE)
        torch.testing.assert_close(got['boxes'], want['boxes'], rtol=1e-4, atol=1e-3)
        assert torch.equal(got['labels'], want['labels'])
        if 'masks' in want: assert (got['masks'] == want['masks']).float().mean() > 0.999
