"Models and their inputs at the edges: narrow heads on small images, timm backbones of every family, damaged or unsafe model files, diverging training, very large images."
import math
from pathlib import Path
from unittest import mock
import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageDraw
from visionnb.core import VisionnbError, torch_threads
from visionnb.data.core import load_image
from visionnb.data.loaders import det_dls
from visionnb.data.shapes import shapes_records
from visionnb.learner.det import (DETECTORS, NaNGuardCallback, TrainingError, create_detector, det_learner, detection_inputs, display_copy,
                                  export_detector, image_tensor, resized_size, load_detector, predict_detections)
from visionnb.models.backbone import Backbone, PretrainedWeightsError, load_tensors, read_state_dict

VOCAB = ['circle', 'square']
SIZES = [(64, 64), (96, 96), (128, 128), (160, 160), (64, 160), (160, 96)]   # P7 of 64-128 px is 1 x 1


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1): yield


def narrow(arch:str, channels:int):
    "A ResNet-18 detector whose pyramid and head are `channels` wide (SOLOv2's head and mask branch too, as the CLI builds it)."
    solo = dict(head_channels=channels, mask_channels=channels, kernel_channels=channels) if arch == 'solov2' else {}
    return create_detector(arch, VOCAB, 'resnet18', channels=channels, **solo)


def one_object(h:int, w:int) -> dict:
    mask = torch.zeros(1, h, w, dtype=torch.uint8)
    mask[:, h // 4:h // 2, w // 4:w // 2] = 1
    return dict(boxes=torch.tensor([[w / 4, h / 4, w / 2, h / 2]]), labels=torch.tensor([1]), masks=mask)


@pytest.mark.parametrize('channels', [16, 32, 64])
@pytest.mark.parametrize('arch', sorted(DETECTORS))
def test_narrow_heads_train_and_predict_one_small_image(arch, channels):
    "Every detector at every width: one image of each size trains (finite loss, gradients) and predicts (boxes inside the image)."
    torch.manual_seed(0)
    model = narrow(arch, channels)
    for h, w in SIZES:
        model.train()
        losses = model.loss(model(torch.randn(1, 3, h, w)), [one_object(h, w)])
        total = sum(losses.values())
        assert torch.isfinite(total), (arch, channels, (h, w), losses)
        model.zero_grad(); total.backward()
        (found,) = model.predict(torch.randn(1, 3, h, w))
        assert found['boxes'].shape[1:] == (4,) and len(found['boxes']) == len(found['scores'])
        if len(found['boxes']):
            inside = torch.tensor([w, h, w, h]) + 1e-3   # PAA's score voting averages clipped boxes: float rounding only
            assert (found['boxes'] >= 0).all() and (found['boxes'] <= inside).all(), found['boxes']


@pytest.mark.parametrize('channels', [16, 32])
def test_group_normalized_retinanet_is_narrow_too(channels):
    model = create_detector('retinanet', VOCAB, 'resnet18', version=2, channels=channels)
    assert model.predict(torch.randn(1, 3, 128, 128))[0]['boxes'].shape[1:] == (4,)


def test_gn_groups_keep_two_channels_per_group():
    model = narrow('fcos', 32)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_channels // m.num_groups >= 2 for m in norms)
    assert all(m.num_groups == 32 for m in create_detector('fcos', VOCAB, 'resnet18', channels=256).modules() if isinstance(m, torch.nn.GroupNorm))


FAMILIES = ['convnext_atto', 'efficientnet_b0', 'mobilenetv3_large_100', 'regnetx_002']


@pytest.mark.parametrize('name', FAMILIES)
def test_default_out_indices_are_the_last_three_levels(name):
    backbone = Backbone(f'timm:{name}')
    levels = len(backbone.body.feature_info.info)
    assert backbone.out_indices == tuple(range(levels - 3, levels)) and backbone.strides == [8, 16, 32]
    with torch.no_grad(): maps = backbone.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 64 // s, 96 // s) for c, s in zip(backbone.channels, backbone.strides)]


def test_detectors_build_on_a_four_level_backbone():
    "ConvNeXt has four levels, not five: FCOS takes its last three, SOLOv2 all four."
    fcos = create_detector('fcos', VOCAB, 'convnext_atto', channels=32)
    assert fcos.backbone.strides == [8, 16, 32] and fcos.predict(torch.randn(1, 3, 128, 128))[0]['boxes'].shape[1:] == (4,)
    solo = create_detector('solov2', VOCAB, 'convnext_atto', channels=32, head_channels=32, mask_channels=32, kernel_channels=32)
    assert solo.backbone.strides == [4, 8, 16, 32]
    solo.train()
    assert torch.isfinite(sum(solo.loss(solo(torch.randn(1, 3, 128, 128)), [one_object(128, 128)]).values()))


@pytest.mark.parametrize('name', ['mobilenetv3_large_100', 'efficientnet_b0', 'convnext_atto'])
def test_timm_backbone_loads_a_local_file(tmp_path, name):
    "The families whose timm builder sets its own strictness (MobileNetV3, EfficientNet) load a file like the others; every map equals the source model's."
    source = timm.create_model(name).eval()
    torch.save(source.state_dict(), tmp_path / 'weights.pth')
    backbone = Backbone(f'timm:{name}', pretrained=tmp_path / 'weights.pth').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(): got, want = backbone(x), source.forward_intermediates(x, intermediates_only=True)
    want = [want[i] for i in backbone.out_indices]
    assert len(got) == 3 and all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))


def test_timm_backbone_file_without_some_keys(tmp_path):
    source = timm.create_model('mobilenetv3_large_100')
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith('blocks.6.')}, tmp_path / 'partial.pth')
    with pytest.raises(PretrainedWeightsError, match=r'missing keys \(blocks\.6\.'):
        Backbone('timm:mobilenetv3_large_100', pretrained=tmp_path / 'partial.pth')
    loose = Backbone('timm:mobilenetv3_large_100', pretrained=tmp_path / 'partial.pth', strict=False)
    assert torch.equal(loose.body.blocks[5][0].conv_pw.weight, source.blocks[5][0].conv_pw.weight)


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> Path:
    "A real export_detector file of a small FCOS."
    return export_detector(narrow('fcos', 16), tmp_path_factory.mktemp('export') / 'model.pth', size=64)


def edited(exported:Path, path:Path, edit) -> Path:
    "A copy of the export at `path` with `edit(saved)` applied to its loaded contents."
    saved = torch.load(exported, weights_only=True)
    edit(saved)
    torch.save(saved, path)
    return path


@pytest.mark.parametrize('edit, says', [
    (lambda s: s['config'].pop('version'), 'lacks version'),
    (lambda s: s['config'].pop('arch'), 'lacks arch'),
    (lambda s: s.pop('state_dict'), 'lacks state_dict'),
    (lambda s: s['config'].update(version='1'), "export version '1'"),
    (lambda s: s['config'].update(version=99), 'newer visionnb'),
    (lambda s: s['config'].update(arch='yolo'), "arch 'yolo', which this visionnb does not know (it knows fcos, retinanet"),
    (lambda s: s['config'].update(backbone='no_such_net'), 'does not build a fcos (ValueError: unknown architecture'),
    (lambda s: s['config']['model_kwargs'].update(wings=2), "does not build a fcos (TypeError"),
])
def test_a_damaged_detector_config_is_a_clear_error(exported, tmp_path, edit, says):
    path = edited(exported, tmp_path / 'damaged.pth', edit)
    with pytest.raises(PretrainedWeightsError) as caught: load_detector(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and says in message and ('export_detector' in message or 'visionnb' in message), message


def test_the_unedited_export_loads(exported):
    assert load_detector(exported).vocab == VOCAB


def test_pickled_objects_are_refused_by_every_loader(exported, tmp_path):
    "One message, from every loader: the file may be malicious, it was not loaded, and how to re-save it; none of PyTorch's advice to load it anyway."
    weights = tmp_path / 'weights.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'extra': np.zeros(3)}, weights)
    detector = edited(exported, tmp_path / 'detector.pth', lambda s: s['config'].update(size=np.int64(64)))
    for load, path in ((read_state_dict, weights), (load_detector, detector), (load_tensors, weights)):
        with pytest.raises(VisionnbError) as caught: load(path)
        message = str(caught.value)
        for part in (str(path), 'pickled Python objects', 'numpy', 'malicious', 'NOT loaded', 'torch.save(model.state_dict(), path)'):
            assert part in message, (load.__name__, message)
        assert 'weights_only' not in message and len(message) < 600, message


def test_a_damaged_file_says_it_cannot_be_read(exported, tmp_path):
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(exported.read_bytes()[:1000])
    with pytest.raises(PretrainedWeightsError, match='cut.pth: cannot be read as a detector .RuntimeError: PytorchStreamReader'): load_detector(cut)
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(PretrainedWeightsError, match='cannot be read as weights .EOFError: empty or cut short'): read_state_dict(tmp_path / 'empty.pth')


@pytest.fixture(scope='module')
def tiny_dls():
    train, valid = shapes_records('tiny', 'train'), shapes_records('tiny', 'valid')
    dls = det_dls(train[:4], valid[:2], size=64, bs=2)
    dls.train.shuffle = False
    return dls


def fit_error(dls, lr:float, loss_edit=None, **guard) -> TrainingError:
    "The `TrainingError` of one epoch of a small FCOS at `lr`, its loss terms passed through `loss_edit(terms, training)`."
    torch.manual_seed(0)
    learn = det_learner(dls, 'fcos', 'resnet18', model_kwargs=dict(channels=16), metrics=None, cbs=[NaNGuardCallback(**guard)])
    if loss_edit is not None:
        loss = learn.model.loss
        learn.model.loss = lambda outputs, targets: loss_edit(loss(outputs, targets), learn.model.training)
    with pytest.raises(TrainingError) as caught, learn.no_bar(), learn.no_logging(): learn.fit(1, lr)
    return caught.value


def test_divergence_is_blamed_on_training_with_the_clis_flags(tiny_dls):
    error = fit_error(tiny_dls, 1e3, lr_hint='--lr', clip_hint='--clip NORM')
    message = str(error)
    assert (error.phase, error.epoch, error.lr) == ('train', 0, 1e3) and error.step is not None
    assert message.startswith('the loss became non-finite during training') and 'training step' in message, message
    assert '--lr, 1e+03 at this step' in message and '--clip NORM' in message, message
    assert 'validation image' not in message and 'GradientClip' not in message and 'Exception occured' not in message, message
    names = {int(r.image_id): r.file.name for r in tiny_dls.train.items}
    assert error.image_ids and error.files == [names[i] for i in error.image_ids]


def test_a_nan_only_in_validation_names_the_validation_images(tiny_dls):
    error = fit_error(tiny_dls, 1e-4, lambda terms, training: terms if training else {k: v * math.nan for k, v in terms.items()})
    assert error.phase == 'valid' and error.step is None
    assert 'in validation' in str(error) and 'validation image ids' in str(error) and 'check_dataset' in str(error), str(error)
    assert error.files == [r.file.name for r in tiny_dls.valid.items[:len(error.files)]]


def test_a_nan_loss_in_training_names_that_step(tiny_dls):
    error = fit_error(tiny_dls, 1e-4, lambda terms, training: {k: v * math.nan for k, v in terms.items()})
    assert (error.phase, error.step, error.batch) == ('train', 0, 0) and "the lr of fit, 0.0001 at this step" in str(error), str(error)


def picture(w:int, h:int) -> Image.Image:
    "A smooth picture with a few shapes: what photographs look like to a resampler."
    img = Image.linear_gradient('L').resize((w, h)).convert('RGB')
    draw = ImageDraw.Draw(img)
    for i in range(6): draw.ellipse([w * i / 8, h * i / 9, w * i / 8 + w / 5, h * i / 9 + h / 6], fill=(255, 40 * i, 0))
    return img


@pytest.fixture(scope='module')
def small_model():
    model = narrow('fcos', 16).eval()
    model.score_thresh = 0.
    return model


@pytest.mark.parametrize('suffix', ['.jpg', '.png'])
def test_a_normal_size_image_predicts_as_its_full_size_tensor(tmp_path, small_model, suffix):
    "An image less than 4x the input size is read as before: the same batch as the full-size tensor, so the same predictions."
    path = tmp_path / f'normal{suffix}'
    picture(300, 200).save(path)
    full = detection_inputs([image_tensor(path)[0]], 96)
    read = detection_inputs([path], 96)
    assert torch.equal(full[0], read[0]) and full[1:] == read[1:]
    got = predict_detections(small_model, [path], size=96)[0]
    want = predict_detections(small_model, [image_tensor(path)[0]], size=96)[0]
    assert len(got['boxes']) > 0 and torch.allclose(got['boxes'], want['boxes'], atol=1e-4) and torch.allclose(got['scores'], want['scores'])
    assert torch.equal(got['labels'], want['labels']) and got['orig_size'] == (200, 300)


@pytest.mark.parametrize('suffix', ['.jpg', '.png'])
def test_a_large_image_is_reduced_before_it_becomes_a_tensor(tmp_path, suffix):
    "No full-size tensor: the largest tensor made is a few times the input size; the input is close to the full-size path's."
    path = tmp_path / f'large{suffix}'
    picture(4000, 3000).save(path)
    from visionnb.learner import inference as det   # where the readers live
    made = []
    real = det.TF.pil_to_tensor
    with mock.patch.object(det.TF, 'pil_to_tensor', side_effect=lambda img: made.append(img.size) or real(img)):
        batch, sizes, orig_sizes = detection_inputs([path], 128)
    assert made and max(max(s) for s in made) <= 4 * 128, made
    assert sizes == [(96, 128)] and orig_sizes == [(3000, 4000)]
    full = detection_inputs([image_tensor(path)[0]], 128)[0]
    assert (batch - full).abs().mean() < 0.02, (batch - full).abs().mean()


def test_exif_rotated_large_jpeg_is_read_upright(tmp_path):
    path = tmp_path / 'rotated.jpg'
    exif = Image.Exif(); exif[0x0112] = 6   # stored on its side: shown rotated by 90 degrees
    picture(4000, 3000).save(path, exif=exif)
    batch, sizes, orig_sizes = detection_inputs([path], 128)
    assert orig_sizes == [(4000, 3000)] and sizes == [(128, 96)] and load_image(path).size == (3000, 4000)
    assert (batch - detection_inputs([image_tensor(path)[0]], 128)[0]).abs().mean() < 0.02


def test_large_image_boxes_come_back_in_original_pixels(tmp_path, small_model):
    "Whatever the reduction, a box the network puts at (10, 20, 50, 60) of its 128 x 96 input is (312.5, 625, 1562.5, 1875) of the 4000 x 3000 image."
    path = tmp_path / 'large.jpg'
    picture(4000, 3000).save(path)
    fixed = [dict(boxes=torch.tensor([[10., 20, 50, 60]]), scores=torch.tensor([0.9]), labels=torch.tensor([1]))]
    with mock.patch.object(small_model, 'predict', return_value=fixed) as predict:
        (found,) = predict_detections(small_model, path, size=128)
    assert predict.call_args.args[1] == [(96, 128)] and found['orig_size'] == (3000, 4000) and found['file'] == path
    assert torch.allclose(found['boxes'], torch.tensor([[312.5, 625., 1562.5, 1875.]])) and found['names'] == ['square']


def test_display_copy_scales_image_and_boxes(tmp_path):
    path = tmp_path / 'large.jpg'
    picture(4000, 3000).save(path)
    prediction = dict(boxes=torch.tensor([[400., 300, 2000, 1500]]), scores=torch.tensor([0.9]), labels=torch.tensor([0]))
    image, shown = display_copy(path, prediction)
    assert image.shape == (3, 768, 1024) and image.dtype == torch.uint8
    assert torch.allclose(shown['boxes'], torch.tensor([[102.4, 76.8, 512., 384.]])) and torch.equal(shown['scores'], prediction['scores'])
    small, same = display_copy(np.asarray(picture(300, 200)), prediction)   # never enlarged
    assert small.shape == (3, 200, 300) and torch.allclose(same['boxes'], prediction['boxes'])


def test_resized_size_is_the_validation_resize():
    from visionnb.data.transforms import det_transforms
    from torchvision import tv_tensors
    for h, w in ((3000, 4000), (200, 300), (517, 93), (64, 64)):
        assert resized_size((h, w), 128) == tuple(det_transforms(128, train=False)(tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8))).shape[-2:])
