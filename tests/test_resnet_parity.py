"Every ResNet variant of `visionnb.models.resnet` against timm's model of the same name, with the same weights."
import pytest
import timm
import torch
from visionnb.core import torch_threads
from visionnb.models.resnet import RESNET_VARIANTS, create_resnet, from_timm, timm_parity


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1): yield


@pytest.mark.parametrize('name', list(RESNET_VARIANTS))
def test_outputs_and_features_match_timm(name):
    parity = timm_parity(name, size=64, batch=2, seed=1)
    assert parity['max_abs_diff'] <= 1e-5, parity
    assert parity['max_abs_logit'] > 1, 'random BatchNorm statistics should give logits of visible size'


@pytest.mark.parametrize('name', list(RESNET_VARIANTS))
def test_same_state_dict_names_and_feature_info(name):
    with torch.device('meta'): ours, reference = create_resnet(name), timm.create_model(name)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.feature_info == reference.feature_info


def test_from_timm_keeps_classes_and_input_channels():
    reference = timm.create_model('resnet18', num_classes=7, in_chans=1).eval()
    model = from_timm(reference)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(model(x), reference(x))
    assert model.fc.out_features == 7 and not model.training
