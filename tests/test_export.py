"""ONNX round trip of a detector file (`export_detector` -> `load_detector` -> `export_onnx` -> ONNX Runtime on real image files, against
`predict_detections`), and the TensorRT path: the EfficientNMS_TRT export checked on the CPU; engines built and compared with PyTorch
where TensorRT and a CUDA GPU are present, skipped with the reason elsewhere."""
import onnx
import pytest
import torch
from torch import nn
from fastai.torch_core import set_seed
from visionnb.core import ExportError, torch_threads
from visionnb.data.shapes import shapes_records
from visionnb.det.core import top_candidates
from visionnb.learner.cls import create_cls_model
from visionnb.learner.det import create_detector, export_detector, load_detector, predict_detections
from visionnb.deploy.onnx import (OnnxModel, DetectionGraph, export_onnx, graph_clip, graph_nms, onnx_parity, onnx_metadata,
                                  tensorrt_nms, EfficientNMS)
from visionnb.deploy.tensorrt import TensorRTModel, build_engine, export_tensorrt, tensorrt_parity, tensorrt_status

VOCAB = ['circle', 'square', 'triangle', 'star', 'cross', 'heart']
STATUS = tensorrt_status()


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


def tiny_detector(arch='fcos', **kwargs):
    "A random, lively `arch` detector on a narrow ResNet-18 (head width 32, one conv per branch)."
    set_seed(0)
    return lively(create_detector(arch, VOCAB, 'resnet18', channels=32, num_convs=1, **kwargs)).eval()


@pytest.mark.parametrize('arch', ['fcos', 'retinanet'])
def test_dynamic_graph_spaces_torchvision_priors_by_the_input_size(tmp_path, arch):
    model = tiny_detector(arch, prior_strides='torchvision')
    path = export_onnx(model, tmp_path / f'{arch}.onnx', dynamic=True, image_size=128, batch_size=2, postprocess=False)
    images = torch.randn(2, 3, 224, 160, generator=torch.Generator().manual_seed(0))   # P6 and P7 steps 56, 112 down
    report = onnx_parity(model, path, images, runs=1, threads=1)
    assert report['priors_diff'] == 0 and max(v for k, v in report.items() if k.endswith('_diff')) < 1e-4, report
    assert not torch.equal(model(images)['priors'], tiny_detector(arch)(images)['priors'])   # unlike the level rule's


def candidates(model, images):
    "The detector's clipped top-k candidates `(boxes, scores, labels)`, as `DetectionGraph` hands them to NMS."
    with torch.no_grad():
        outputs = model(images)
        scores, decode = model.scoring(outputs)
        priors, labels, scores, _ = top_candidates(scores, outputs['level_counts'], model.topk)
        regression = outputs['bbox_regression']
        boxes = decode(priors, regression.gather(1, priors[..., None].expand(-1, -1, regression.shape[-1])))
    return graph_clip(boxes, torch.tensor(images.shape[-2:], dtype=boxes.dtype)), scores, labels


@pytest.mark.parametrize('arch, score_thresh', [('fcos', 0.65), ('retinanet', 0.389)])   # thresholds at which the detection count varies
def test_plugin_function_equals_the_onnx_nms_on_detector_candidates(arch, score_thresh):
    model, images = tiny_detector(arch, score_thresh=score_thresh), torch.randn(2, 3, 96, 128)
    boxes, scores, labels = candidates(model, images)
    expected = graph_nms(boxes, scores, labels, model.score_thresh, model.nms_thresh, model.max_detections)
    found = tensorrt_nms(boxes, scores, labels, model.score_thresh, model.nms_thresh, model.max_detections, model.num_classes)
    assert int(expected[0].sum()) > 0 and len(set(expected[0].tolist())) > 1   # detections, and a different number per image
    for e, f in zip(expected, found): assert torch.equal(e, f)
    # the plugin's own layout: int32 [B, 1] counts, zero padding (class 0) where ours has label -1
    one_hot = scores[..., None] * (labels[..., None] == torch.arange(model.num_classes)).float()
    num, kept, kept_scores, classes = EfficientNMS.apply(boxes, one_hot, model.score_thresh, model.nms_thresh, model.max_detections)
    assert num.dtype == classes.dtype == torch.int32 and num.shape == (2, 1) and classes.shape == (2, model.max_detections)
    assert torch.equal(num[:, 0].long(), expected[0]) and torch.equal(kept, expected[1]) and torch.equal(kept_scores, expected[2])
    assert torch.equal(classes.long(), expected[3].clamp(min=0))
    with torch.no_grad():
        graph = DetectionGraph(model, nms='tensorrt')(images)
        for e, f in zip(DetectionGraph(model)(images), graph): assert torch.equal(e, f)


@pytest.mark.parametrize('dynamic', [False, True])
def test_tensorrt_nms_export_holds_the_plugin_node(tmp_path, dynamic):
    model = tiny_detector(score_thresh=0.45)
    path = export_onnx(model, tmp_path / 'fcos_trt.onnx', image_size=(96, 128), batch_size=2, dynamic=dynamic, nms='tensorrt')
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=False)   # custom domains pass the checker; ONNX shape inference cannot see inside the plugin
    plugins = [n for n in proto.graph.node if n.op_type == 'EfficientNMS_TRT']
    assert len(plugins) == 1 and plugins[0].domain == 'TRT' and not any(n.op_type == 'NonMaxSuppression' for n in proto.graph.node)
    assert {o.domain: o.version for o in proto.opset_import}.get('TRT') == 1
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in plugins[0].attribute}
    assert attributes['max_output_boxes'] == model.max_detections and attributes['box_coding'] == 0 and attributes['background_class'] == -1
    assert attributes['class_agnostic'] == 0 and attributes['score_activation'] == 0 and attributes['plugin_version'] == b'1'
    assert attributes['score_threshold'] == pytest.approx(model.score_thresh) and attributes['iou_threshold'] == pytest.approx(model.nms_thresh)
    metadata = onnx_metadata(path)
    assert metadata['nms'] == 'tensorrt' and metadata['vocab'] == VOCAB and metadata['outputs'] == 'detections'
    assert [o.name for o in proto.graph.output] == ['num_detections', 'boxes', 'scores', 'labels']
    assert onnx_metadata(export_onnx(model, tmp_path / 'fcos.onnx', image_size=(96, 128), batch_size=2))['nms'] == 'onnx'


def test_onnx_runtime_refuses_the_plugin_file_clearly(tmp_path):
    path = export_onnx(tiny_detector(score_thresh=0.45), tmp_path / 'fcos_trt.onnx', image_size=(96, 128), batch_size=2, nms='tensorrt')
    with pytest.raises(ExportError, match="ONNX Runtime cannot run") as error: OnnxModel(path)
    assert "nms='onnx'" in str(error.value) and str(path) in str(error.value)
    with pytest.raises(ExportError, match='unknown nms'): export_onnx(tiny_detector(), tmp_path / 'x.onnx', image_size=64, nms='cuda')


@pytest.mark.skipif(STATUS is None, reason='TensorRT and a CUDA GPU are present: the GPU tests below run instead')
def test_without_tensorrt_every_entry_point_stops_with_the_reason(tmp_path):
    assert isinstance(STATUS, str)
    try: import tensorrt  # noqa: F401
    except ImportError: assert '`tensorrt` cannot be imported' in STATUS and 'pip install' in STATUS
    if not torch.cuda.is_available(): assert 'no CUDA GPU' in STATUS
    model = tiny_detector(score_thresh=0.45)
    path = export_onnx(model, tmp_path / 'fcos_trt.onnx', image_size=(96, 128), batch_size=2, nms='tensorrt')
    entries = [lambda: build_engine(path), lambda: build_engine(path, precision='int8', calibration=[torch.randn(2, 3, 96, 128)]),
               lambda: TensorRTModel(tmp_path / 'fcos.engine'), lambda: tensorrt_parity(model, tmp_path / 'fcos.engine', torch.randn(1, 3, 64, 64)),
               lambda: export_tensorrt(model, tmp_path / 'fcos.engine', image_size=64)]
    for entry in entries:
        with pytest.raises(ExportError) as error: entry()
        assert STATUS in str(error.value)
    assert not (tmp_path / 'fcos.engine').exists() and not (tmp_path / 'fcos_trt_fp32.engine').exists()


def gpu_case(precision):
    "A pytest param for `precision`, skipped with the reason where this machine cannot build it."
    status = tensorrt_status(precision)
    return pytest.param(precision, marks=pytest.mark.skipif(status is not None, reason=f'TensorRT {precision} path not run: {status}'))


# Agreement of engine and eager model that each precision must reach on random lively models (GPU only; FP32 engines are built without TF32)
LIMITS = dict(fp32=dict(label=0.97, box=0.5, score=1e-3, logits=1e-3, top1=1.), fp16=dict(label=0.9, box=2., score=2e-2, logits=5e-2, top1=0.95),
              int8=dict(label=0.5, box=16., score=0.2, logits=1., top1=0.5))


@pytest.mark.parametrize('precision', [gpu_case(p) for p in ('fp32', 'fp16', 'int8')])
@pytest.mark.parametrize('arch, score_thresh', [('fcos', 0.65), ('retinanet', 0.389)])
def test_detector_engine_agrees_with_eager(tmp_path, arch, score_thresh, precision):
    torch.backends.cudnn.allow_tf32 = False   # an FP32 reference
    model, limits = tiny_detector(arch, score_thresh=score_thresh).cuda(), LIMITS[precision]
    calibration = [torch.randn(2, 3, 128, 160) for _ in range(8)]
    engine = export_tensorrt(model, tmp_path / f'{arch}.engine', precision, calibration, image_size=(128, 160), batch_size=2)
    assert engine.is_file() and (tmp_path / f'{arch}.engine.json').is_file()
    runner = TensorRTModel(engine)
    assert runner.vocab == VOCAB and runner.precision == precision and runner.output_names == ['num_detections', 'boxes', 'scores', 'labels']
    report = tensorrt_parity(model, engine, torch.randn(2, 3, 128, 160), runs=3)
    assert report['detections'] > 0 and report['count_agreement'] >= (1. if precision == 'fp32' else 0.5), report
    assert report['label_agreement'] >= limits['label'] and report['box_diff'] < limits['box'] and report['score_diff'] < limits['score'], report
    outputs = runner(torch.randn(2, 3, 128, 160))
    assert outputs['num_detections'].dtype == outputs['labels'].dtype == torch.int64 and outputs['boxes'].shape == (2, model.max_detections, 4)
    n = int(outputs['num_detections'][0])
    assert (outputs['labels'][0, n:] == -1).all() and (outputs['scores'][0, n:] == 0).all()


@pytest.mark.parametrize('precision', [gpu_case(p) for p in ('fp32', 'fp16', 'int8')])
def test_dynamic_detector_engine_takes_other_sizes(tmp_path, precision):
    model = tiny_detector(score_thresh=0.65).cuda()
    onnx_file = export_onnx(model, tmp_path / 'fcos.onnx', image_size=(128, 128), dynamic=True, nms='tensorrt')
    engine = build_engine(onnx_file, tmp_path / 'fcos.engine', precision, [torch.randn(2, 3, 128, 128) for _ in range(4)],
                          min_shape=(1, 64, 64), opt_shape=(2, 128, 128), max_shape=(4, 192, 192))
    for b, h, w in ((1, 96, 160), (3, 192, 128)):
        report = tensorrt_parity(model, engine, torch.randn(b, 3, h, w), runs=1)
        assert report['label_agreement'] >= LIMITS[precision]['label'] and report['box_diff'] < LIMITS[precision]['box'], report
    with pytest.raises(ExportError, match='outside the engine'): TensorRTModel(engine)(torch.randn(1, 3, 256, 256))


@pytest.mark.parametrize('precision', [gpu_case(p) for p in ('fp32', 'fp16', 'int8')])
def test_classifier_engine_agrees_with_eager(tmp_path, precision):
    torch.backends.cudnn.allow_tf32 = False
    set_seed(0)
    model = create_cls_model('resnet18', 6).eval().cuda()
    engine = export_tensorrt(model, tmp_path / 'resnet18.engine', precision, [torch.randn(4, 3, 64, 64) for _ in range(8)], image_size=64,
                             batch_size=4, vocab=VOCAB)
    report = tensorrt_parity(model, engine, torch.randn(4, 3, 64, 64), runs=3)
    assert report['logits_diff'] < LIMITS[precision]['logits'] and report['top1_agreement'] >= LIMITS[precision]['top1'], report
    assert TensorRTModel(engine).vocab == VOCAB


@pytest.mark.parametrize('precision', [gpu_case(p) for p in ('fp32', 'fp16')])
def test_engine_predicts_image_files_like_the_detector(tmp_path, files, precision):
    model = tiny_detector(score_thresh=0.65)
    loaded = load_detector(export_detector(model, tmp_path / 'fcos.pth', size=128)).cuda()
    engine = export_tensorrt(loaded, tmp_path / 'fcos.engine', precision, batch_size=2)
    expected, found = predict_detections(loaded, files, bs=2), TensorRTModel(engine).predict(files, bs=2)
    for e, f in zip(expected, found):
        assert f['file'] == e['file'] and f['orig_size'] == e['orig_size']
        n = min(len(e['boxes']), len(f['boxes']))
        assert (f['boxes'][:n] - e['boxes'][:n]).abs().max() < (1. if precision == 'fp32' else 4.)


def tiny_solov2(**kwargs):
    "A random SOLOv2 on a narrow ResNet-18 whose kernels are spread: crisp masks and distinct scores, many instances above the thresholds."
    set_seed(0)
    model = create_detector('solov2', VOCAB, 'resnet18', channels=32, head_channels=32, num_convs=1, mask_channels=32, kernel_channels=32,
                            num_grids=(16, 12, 8, 6, 4), scale_ranges=((1, 48), (24, 96), (48, 192), (96, 384), (192, 2048)),
                            score_thresh=0.005, update_thresh=0.005, **kwargs)
    with torch.no_grad():
        for p in model.head.kernel.parameters(): p.normal_(0, 0.5)
        model.head.category.weight.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize('dynamic, batch, sizes', [(False, 2, [(128, 160)]), (True, 1, [(96, 128), (160, 160)]), (True, 3, [(128, 96)])])
def test_solov2_onnx_masks_match_pytorch(tmp_path, dynamic, batch, sizes):
    model = tiny_solov2()
    path = export_onnx(model, tmp_path / 'solov2.onnx', image_size=sizes[0], batch_size=batch, dynamic=dynamic, vocab=VOCAB)
    assert OnnxModel(path).metadata['outputs'] == 'instances'
    generator = torch.Generator().manual_seed(1)
    for size in sizes:
        with torch_threads(1):
            report = onnx_parity(model, path, torch.randn(batch, 3, *size, generator=generator), runs=1, threads=1)
        assert report['detections'] >= 20 * batch, report
        assert report['count_agreement'] == 1 and report['label_agreement'] == 1, report
        assert report['score_diff'] < 1e-4 and report['min_mask_iou'] >= 0.99, report


def test_solov2_onnx_file_predicts_masks_at_the_original_size(tmp_path, files):
    loaded = load_detector(export_detector(tiny_solov2(max_detections=30), tmp_path / 'solov2.pth', size=128))
    runner = OnnxModel(export_onnx(loaded, tmp_path / 'solov2.onnx', dynamic=True), threads=1)
    with torch_threads(1):
        expected, found = predict_detections(loaded, files, bs=2), runner.predict(files, bs=2)
    for e, f in zip(expected, found):
        assert f['masks'].shape == e['masks'].shape and f['masks'].shape[1:] == tuple(e['orig_size']) and len(f['masks']) == 30
        assert torch.equal(f['labels'], e['labels'])
        inter, union = (f['masks'].bool() & e['masks'].bool()).flatten(1).sum(1), (f['masks'].bool() | e['masks'].bool()).flatten(1).sum(1)
        assert (inter / union.clamp(min=1)).min() >= 0.99


def test_the_old_export_module_still_imports_and_says_where_names_went():
    "`visionnb.callbacks.export` (before the move to `visionnb.deploy`) gives the same objects, with a DeprecationWarning."
    import visionnb.callbacks.export as old
    import visionnb.deploy.onnx, visionnb.deploy.tensorrt
    with pytest.warns(DeprecationWarning, match='import export_onnx from visionnb.deploy.onnx'):
        assert old.export_onnx is visionnb.deploy.onnx.export_onnx
    with pytest.warns(DeprecationWarning, match='visionnb.deploy.tensorrt'):
        from visionnb.callbacks.export import build_engine
    assert build_engine is visionnb.deploy.tensorrt.build_engine
    assert set(dir(old)) == set(visionnb.deploy.onnx.__all__) | set(visionnb.deploy.tensorrt.__all__)
    with pytest.raises(AttributeError, match='no attribute'): old.not_a_name
