"""Detectors loaded from torchvision give torchvision's detections and losses at padded sizes that are not multiples of
128 and in batches of 1 to 3 images of different sizes (`prior_strides='torchvision'`); the level rule, which models
trained here use, places the coarse levels' priors elsewhere at those sizes."""
import numpy as np
import pytest
import torch
from torchvision.models.detection import fcos_resnet50_fpn, retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2
from visionnb.core import torch_threads
from visionnb.det.fcos import fcos_from_torchvision
from visionnb.det.retinanet import retinanet_from_torchvision

# torchvision resizes by min(min_size / short side, max_size / long side): every size here gives a scale of 1
MIN_SIZE, MAX_SIZE = 200, 300
BATCHES = [[(200, 250)], [(190, 300), (300, 160)], [(200, 250), (190, 300), (200, 200)]]   # padded: 224x256, 320x320, 224x320
BUILDERS = dict(fcos=fcos_resnet50_fpn, retinanet=retinanet_resnet50_fpn, retinanet_v2=retinanet_resnet50_fpn_v2)


def converted(kind, theirs):
    if kind == 'fcos': return fcos_from_torchvision(theirs)
    return retinanet_from_torchvision(theirs, version=2 if kind.endswith('v2') else 1)


@pytest.fixture(scope='module', params=list(BUILDERS))
def pair(request):
    "A random-weight torchvision detector and ours from its state dict, with a classifier bias that gives detections."
    torch.manual_seed(0)
    with torch_threads(1):
        theirs = BUILDERS[request.param](weights=None, weights_backbone=None, num_classes=91,
                                         min_size=MIN_SIZE, max_size=MAX_SIZE)
        ours = converted(request.param, theirs)
    with torch.no_grad():
        for model in (theirs, ours):
            bias = model.head.classification_head.cls_logits.bias
            bias.copy_(torch.linspace(-3, 1, bias.numel()))
    return request.param, theirs, ours


def batch_of(theirs, sizes, seed):
    "Random images of `sizes` and torchvision's padded, normalized batch of them (which is our input)."
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    image_list = theirs.transform(images)[0]
    assert image_list.image_sizes == sizes   # not resized
    return images, image_list.tensors


def targets_for(sizes, seed):
    "Boxes of many sizes, one larger than its image, so that every level from P3 to P7 gets positives."
    g, targets = torch.Generator().manual_seed(seed), []
    for h, w in sizes:
        xy = torch.rand(6, 2, generator=g) * torch.tensor([w, h]) * 0.7
        boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * torch.tensor([w, h]) * 0.6 + 8], 1)
        boxes[-1] = torch.tensor([-100., -80, w + 150, h + 120])
        targets.append(dict(boxes=boxes, labels=torch.randint(1, 91, (6,), generator=g)))
    return targets


def canonical(detections):
    "Detections sorted by score, label and box: equal scores may leave NMS in either order."
    d = {k: v.detach() for k, v in detections.items()}
    order = np.lexsort((d['boxes'][:, 1].numpy(), d['boxes'][:, 0].numpy(), d['labels'].numpy(), -d['scores'].numpy()))
    return {k: v[torch.from_numpy(order)] for k, v in d.items()}


def differences(mine, reference):
    "The per-image count and label agreement, and the largest box and score differences where they agree."
    same, box, score = True, 0., 0.
    for a, b in zip(map(canonical, mine), map(canonical, reference)):
        if len(a['boxes']) != len(b['boxes']) or not torch.equal(a['labels'], b['labels']):
            same = False
            continue
        if len(a['boxes']):
            box = max(box, (a['boxes'] - b['boxes']).abs().max().item())
            score = max(score, (a['scores'] - b['scores']).abs().max().item())
    return same, box, score


@pytest.mark.parametrize('sizes', BATCHES, ids=['1x224x256', '2x320x320', '3x224x320'])
def test_torchvision_weights_give_torchvision_detections_and_losses(pair, sizes):
    kind, theirs, ours = pair
    images, batch = batch_of(theirs, sizes, seed=len(sizes))
    assert batch.shape[-2] % 128 or batch.shape[-1] % 128   # sizes where the two rules differ
    targets = targets_for(sizes, seed=len(sizes))
    with torch.no_grad(), torch_threads(1):
        their_detections = theirs.eval()(images)
        our_detections = ours.eval().postprocess(ours(batch), sizes)
        their_losses = theirs.train()([im.clone() for im in images], [dict(t) for t in targets])
        our_losses = ours.train().loss(ours(batch), targets)
    same, box, score = differences(our_detections, their_detections)
    assert sum(len(d['boxes']) for d in their_detections) >= 50 * len(sizes)
    assert same and box <= 1e-3 and score <= 1e-5, (kind, same, box, score)
    assert set(our_losses) == set(their_losses)
    for k, v in their_losses.items():
        assert abs(our_losses[k].item() - v.item()) <= 1e-4 * abs(v.item()), (kind, k, our_losses[k].item(), v.item())


def test_the_level_rule_moves_the_coarse_priors_at_such_sizes(pair):
    kind, theirs, ours = pair
    _, batch = batch_of(theirs, BATCHES[2], seed=0)
    with torch.no_grad(), torch_threads(1):
        torchvision_priors = ours.eval()(batch)['priors']
        ours.prior_strides = 'level'
        try: level_priors = ours(batch)['priors']
        finally: ours.prior_strides = 'torchvision'
    moved = (torchvision_priors != level_priors).any(-1)
    finest = batch.shape[-2] // 8 * (batch.shape[-1] // 8) * (1 if kind == 'fcos' else 9)
    assert not moved[:finest].any() and moved.any()   # P3 agrees; only the coarse levels move


def test_models_built_here_use_the_level_rule():
    from visionnb.det.fcos import fcos
    from visionnb.det.retinanet import retinanet
    assert fcos(['a'], 'resnet18', channels=16, num_convs=1).prior_strides == 'level'
    assert retinanet(['a'], 'resnet18', channels=16, num_convs=1).prior_strides == 'level'
    with pytest.raises(ValueError, match="prior_strides must be one of"):
        fcos(['a'], 'resnet18', channels=16, num_convs=1, prior_strides='padded')
