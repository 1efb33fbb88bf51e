import pytest
import torch
from torch import nn

from cldst.models import NETS, build_model

# net -> (in_channels, image_size) of its typical benchmark
TYPICAL_INPUTS = {"resnet18": (3, 32), "mobilenetv2": (3, 32), "vgg16": (3, 32), "lenet5": (1, 28), "mlp": (1, 8)}
BN_NETS = ("resnet18", "mobilenetv2", "vgg16")
NUM_CLASSES = 10


def _build(name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    in_channels, size = TYPICAL_INPUTS[name]
    return build_model(name, in_channels, size, num_classes)


def _batch(name: str, batch: int = 2) -> torch.Tensor:
    in_channels, size = TYPICAL_INPUTS[name]
    return torch.randn(batch, in_channels, size, size)


def test_every_net_has_typical_inputs():
    assert set(TYPICAL_INPUTS) == set(NETS)


@pytest.mark.parametrize("name", list(TYPICAL_INPUTS))
def test_output_shape_and_house_conventions(name):
    model = _build(name)
    assert model(_batch(name)).shape == (2, NUM_CLASSES)

    # 1. BN: no affine parameters, no running statistics (no buffers at all)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert not module.affine and not module.track_running_stats
    assert list(model.buffers()) == []

    # 2./3. no bias but the classifier's; the classifier is a biased Linear to num_classes
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.bias is not None) == (name not in ("resnet18", "lenet5"))  # as the reference's heads
    assert model.classifier.out_features == NUM_CLASSES
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module is not model.classifier:
            assert module.bias is None, f"{name}: {module} has a bias"

    # 4. every parameter is a maskable weight (ndim > 1) except classifier.bias
    for pname, param in model.named_parameters():
        assert param.ndim > 1 or pname == "classifier.bias", f"{name}: unexpected parameter {pname}"


@pytest.mark.parametrize("name", list(TYPICAL_INPUTS))
def test_channels_last_and_bf16_autocast(name):
    model = _build(name)
    # batch 8: with batch statistics on 1x1 maps (mobilenetv2 at 32x32) a batch of 2 is ill-conditioned
    x = _batch(name, batch=8)
    with torch.no_grad():
        reference = model(x)
        channels_last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, reference, rtol=1e-3, atol=1e-3)
    assert bf16.shape == reference.shape and torch.isfinite(bf16).all()


def test_resnet18_stem_and_parameter_count():
    model = build_model("resnet18", 3, 32, 100)
    stem_conv = model.features.stem[0][0]
    assert stem_conv.kernel_size == (7, 7) and stem_conv.stride == (2, 2) and stem_conv.padding == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())

    def conv(cin, cout, k):
        return cin * cout * k * k

    stem = conv(3, 64, 7)
    layer1 = 4 * conv(64, 64, 3)  # two blocks of two 3x3 convs, identity shortcuts
    total = stem + layer1
    for cin, cout in ((64, 128), (128, 256), (256, 512)):
        # first block: strided 3x3, 3x3, 1x1 shortcut; second block: two 3x3
        total += conv(cin, cout, 3) + conv(cout, cout, 3) + conv(cin, cout, 1) + 2 * conv(cout, cout, 3)
    total += 512 * 100  # classifier weight; no bias, as the reference
    assert sum(p.numel() for p in model.parameters()) == total


@pytest.mark.parametrize("name", BN_NETS)
def test_eval_uses_batch_statistics(name):
    model = _build(name)
    x = _batch(name, batch=3)
    with torch.no_grad():
        model.eval()
        first_with_second = model(x[[0, 1]])[0]
        first_with_third = model(x[[0, 2]])[0]
        eval_out = model(x)
        model.train()
        train_out = model(x)
    assert not torch.allclose(first_with_second, first_with_third)
    torch.testing.assert_close(eval_out, train_out)


@pytest.mark.parametrize("name, min_size", [("lenet5", 16), ("vgg16", 32)])
def test_minimum_input_size(name, min_size):
    model = build_model(name, 1, min_size, NUM_CLASSES)
    assert model(torch.randn(2, 1, min_size, min_size)).shape == (2, NUM_CLASSES)
    with pytest.raises(ValueError, match=rf"{name}.*at least {min_size}x{min_size}.*got {min_size - 1}x"):
        build_model(name, 1, min_size - 1, NUM_CLASSES)


def test_lenet5_on_8x8_and_unknown_name_raise():
    with pytest.raises(ValueError, match="lenet5 needs inputs of at least 16x16, got 8x8"):
        build_model("lenet5", 1, 8, NUM_CLASSES)
    with pytest.raises(ValueError, match="unknown net 'alexnet'"):
        build_model("alexnet", 3, 32, NUM_CLASSES)
    with pytest.raises(ValueError, match="mlp"):
        build_model("mlp", 0, 8, NUM_CLASSES)


@pytest.mark.parametrize("name", list(TYPICAL_INPUTS))
def test_same_seed_same_initial_weights(name):
    def weights(seed):
        torch.manual_seed(seed)
        return _build(name).state_dict()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
