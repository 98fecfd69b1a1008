"CAMCallback in real fits (figures, TensorBoard event files, nothing left behind) and the explorer's logic."
import torch
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import IntToFloatTensor, Normalize
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import TensorImage, TensorCategory, set_seed
from fastai.vision.core import imagenet_stats
from visionnb.core import torch_threads
from visionnb.callbacks.cam import (CAMCallback, CAM_METHODS, cam_inputs, compute_cams, explorer_state, pointing_game,
                                    render_cam_view, target_choices)
from visionnb.data.tiles import shape_presence_data, shape_tiles, tile_scenes
from visionnb.models.plain import PlainConvNet
from visionnb.data.loaders import det_dls
from visionnb.data.shapes import shapes_records
from visionnb.learner.cls import cls_learner
from visionnb.learner.det import det_learner


def _hooks(model) -> int: return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

def _presence_learner(n_train=128, n_valid=16):
    tfms = [IntToFloatTensor(), Normalize.from_stats(*imagenet_stats)]
    def dl(n, seed, shuffle):
        x, y, _ = shape_presence_data('star', n, seed=seed)
        return TfmdDL(list(zip(TensorImage(x), TensorCategory(y))), bs=32, shuffle=shuffle, after_batch=tfms)
    dls = DataLoaders(dl(n_train, 0, True), dl(n_valid, 1, False))
    dls.vocab = ['no star', 'star']
    return cls_learner(dls, 'resnet18', n_out=2, normalize=False, loss_func=CrossEntropyLossFlat(), model_kwargs=dict(channels=(8, 16, 32, 64)))

def _event_files(folder): return list(folder.rglob('events.out.tfevents.*'))

def test_callback_classifier_fit(tmp_path):
    "Two epochs, CAMs every epoch: two figures kept and saved, TensorBoard images written, the fit's gradients and modes untouched."
    with torch_threads(1):
        set_seed(0)
        learn = _presence_learner()
        cb = CAMCallback([0, 3, 5, 7], every=1, method='gradcam++', folder=tmp_path/'cams', log_dir=tmp_path/'runs')
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=cb)
    assert sorted(cb.figures) == [0, 1]
    assert len(list((tmp_path/'cams').glob('cam_epoch*.png'))) == 2
    events = _event_files(tmp_path/'runs')
    assert len(events) == 1 and events[0].stat().st_size > 10_000   # two figures and two grids of overlays
    assert _hooks(learn.model) == 0
    assert all(p.requires_grad for p in learn.model.parameters())
    assert len(learn.recorder.values) == 2   # the fit ran both epochs

def test_callback_every_and_last_epoch(tmp_path):
    "every=2 over 3 epochs: CAMs after epoch 1 and after the last (2)."
    with torch_threads(1):
        set_seed(0)
        learn = _presence_learner(64, 8)
        cb = CAMCallback(2, every=2, method='eigencam')
        with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-3, cbs=cb)
    assert sorted(cb.figures) == [1, 2]

def test_callback_leaves_gradients(tmp_path):
    "Computing CAMs between a backward pass and the step keeps the accumulated gradients and the train mode."
    with torch_threads(1):
        set_seed(0)
        learn = _presence_learner(32, 8)
        model = learn.model.train()
        x, y = learn.dls.one_batch()
        learn.loss_func(model(x), y).backward()
        before = {n: p.grad.clone() for n, p in model.named_parameters()}
        inputs = cam_inputs(learn, 4)
        for method in CAM_METHODS: compute_cams(learn, inputs.images, method, targets=inputs.targets)
    assert model.training and _hooks(model) == 0
    assert all(torch.equal(before[n], p.grad) for n, p in model.named_parameters())

def test_callback_detector_fit(tmp_path):
    "A detector's fit with CAMs on its largest true boxes: figures and TensorBoard files."
    train, valid = shapes_records('tiny', 'train'), shapes_records('tiny', 'valid')
    with torch_threads(1):
        set_seed(0)
        dls = det_dls(train[:8], valid[:4], size=160, bs=4)
        learn = det_learner(dls, 'fcos', 'resnet18', metrics=None, model_kwargs=dict(channels=32))
        cb = CAMCallback(2, every=1, layer='neck.layer_blocks.0', log_dir=tmp_path/'runs')
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=cb)
    assert sorted(cb.figures) == [0, 1] and len(_event_files(tmp_path/'runs')) == 1
    assert all(isinstance(t, dict) and len(t['box']) == 4 for t in cb.inputs.targets)
    assert _hooks(learn.model) == 0

def test_explorer_logic():
    "The explorer's options and view, without a browser."
    with torch_threads(1):
        set_seed(0)
        learn = _presence_learner(32, 8)
        inputs = cam_inputs(learn, 3)
        state = explorer_state(learn, inputs, image=1)
        assert [v for _, v in state['images']] == [0, 1, 2]
        assert [v for _, v in state['methods']] == list(CAM_METHODS)
        assert state['layers'][0][1] == 'layer4'
        choices = target_choices(learn, inputs, 1)
        assert choices[0][1] == inputs.targets[1] and [v for _, v in choices[-2:]] == [0, 1]
        fig = render_cam_view(learn, inputs, 2, 'layercam', 'layer3', 1)
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith('layercam · layer3 · star')

def test_gradcam_points_at_the_object():
    "A PlainConvNet trained on shape tiles (accuracy > 0.8): Grad-CAM's peak lies inside the object (filled mask) for most scenes that hide it at a random place, far above a random point."
    tfms = [IntToFloatTensor(), Normalize.from_stats(*imagenet_stats)]
    def dl(x, y, shuffle): return TfmdDL(list(zip(TensorImage(x), TensorCategory(y))), bs=32, shuffle=shuffle, after_batch=tfms)
    with torch_threads(1):
        set_seed(0)
        train, valid = shape_tiles(3000, 600, seed=0), shape_tiles(600, seed=1)
        learn = cls_learner(DataLoaders(dl(*train[:2], True), dl(*valid[:2], False)), PlainConvNet(7), n_out=7, normalize=False, loss_func=CrossEntropyLossFlat())
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 1e-2)
        scenes, targets, regions = tile_scenes(*valid, 40, seed=4)
        mean, std = (torch.tensor(v)[:, None, None] for v in imagenet_stats)
        cams = compute_cams(learn, (scenes.float() / 255 - mean) / std, 'gradcam', targets=targets.tolist())
    accuracy, rate, random_point = float(learn.recorder.values[-1][2]), pointing_game(cams, masks=regions).mean(), regions.mean()
    assert cams.shape == (40, 192, 192) and cams.min() >= 0 and cams.max() <= 1
    assert accuracy > 0.8, accuracy
    assert rate >= 0.5 and rate > 10 * random_point, (rate, random_point)   # measured 0.68 on the notebook's 60 scenes
