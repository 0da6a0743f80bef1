import pytest
import torch
from torch import nn

from optsweep.trainables.data import load_splits
from optsweep.trainables.models import build_model, check_model_name, model_names

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_model_names_and_check() -> None:
    assert model_names() == ["mlp", "cnn", "resnet18"]
    for name in model_names():
        assert check_model_name(name) == name


@pytest.mark.parametrize("call", [check_model_name, lambda name: build_model(name, (1, 8, 8), 10)])
def test_unknown_model_names_the_value_and_the_valid_ones(call) -> None:
    with pytest.raises(ValueError, match=r"'vit'.*mlp, cnn, resnet18"):
        call("vit")


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_conv_models_need_an_image_shape(name) -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model(name, (64,), 10)


def test_num_classes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", (1, 8, 8), 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
def test_logits_shape(name, shape) -> None:
    model = build_model(name, shape, num_classes=7)
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, *shape)).shape == (1, 7)


def test_param_counts() -> None:
    # mlp: (64*128 + 128) + (128*128 + 128) + (128*10 + 10)
    assert _num_params(build_model("mlp", (1, 8, 8), 10)) == 26_122
    assert _num_params(build_model("mlp", (1, 28, 28), 10)) == 784 * 128 + 128 + 16_512 + 1_290
    # cnn: convs without bias (BN follows) + BN affine + head
    convs = 9 * (1 * 32 + 32 * 64 + 64 * 64)
    assert _num_params(build_model("cnn", (1, 8, 8), 10)) == convs + 2 * (32 + 64 + 64) + 64 * 10 + 10
    resnet = build_model("resnet18", (3, 32, 32), 10)
    assert _num_params(resnet) == 11_173_962  # the usual CIFAR ResNet-18 count
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, nn.Identity)
    assert build_model("resnet18", (1, 28, 28), 10).conv1.in_channels == 1


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
def test_same_seed_same_weights(name) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, (3, 32, 32), 10).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_cifar_stem_is_initialised_like_the_other_convs() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10)
    fan_out = 64 * 3 * 3  # kaiming_normal_(mode="fan_out"): std = sqrt(2 / fan_out)
    assert abs(model.conv1.weight.std().item() - (2 / fan_out) ** 0.5) < 0.01


def test_mlp_overfits_a_tiny_batch_of_digits() -> None:
    torch.manual_seed(0)
    x, y = (t[:64] for t in load_splits("digits").train.tensors)
    model = build_model("mlp", (1, 8, 8), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = nn.functional.cross_entropy(model(x), y).item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    assert initial > 2.0 and loss.item() < 0.01
    assert (model(x).argmax(1) == y).all()


def test_cnn_learns_digits_a_little() -> None:
    torch.manual_seed(0)
    x, y = (t[:32] for t in load_splits("digits").train.tensors)
    model = build_model("cnn", (1, 8, 8), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
