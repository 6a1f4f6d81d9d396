"""The paper's networks timm lacks, each loaded from a synthetic checkpoint in the key layout its real file
has, and giving the source network's features exactly.

The source networks are built here the way the reference (deep-learning-base architectures/timm_addons.py,
torchvision) builds them, not through pyred.architectures."""

import pytest
import torch
import torch.nn.functional as F
from test_checkpoints import robustness
from torch import nn

import pyred


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def _timm_resnet50(**kw):
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(block=Bottleneck, layers=[3, 4, 6, 3], **kw).eval()


class RefBlur(nn.Module):
    """The reference's BlurPoolConv2d: a [[1,2,1],[2,4,2],[1,2,1]]/16 filter per input channel, then the conv."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        self.register_buffer("blur_filter", (torch.tensor([[[[1., 2, 1], [2, 4, 2], [1, 2, 1]]]]) / 16.0)
                             .repeat(conv.in_channels, 1, 1, 1))

    def forward(self, x):
        return self.conv(F.conv2d(x, self.blur_filter, stride=1, padding=(1, 1), groups=self.conv.in_channels))


def ref_blurpool(mod):
    for name, child in mod.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(mod, name, RefBlur(child))
        else:
            ref_blurpool(child)
    return mod


def randomize(model, seed):
    """Random weights and BatchNorm statistics (so a mismatched buffer changes the features)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if t.is_floating_point() and "blur_filter" not in name:
            t.copy_(torch.rand(t.shape, generator=g) * 0.2 + (0.9 if "running_var" in name else -0.1))
    return model


def pooled(model, x):
    return model.global_pool(model.forward_features(x))


def test_wide_resnet50_4_robustness_layout(tmp_path):
    src = randomize(_timm_resnet50(base_width=256), 1)
    path = tmp_path / "wideresnet-50-4-l2-eps3.ckpt"
    sd = {f"{k}": v for k, v in src.state_dict().items()}
    torch.save(robustness(sd, "module."), path)
    bb = pyred.Backbone("wide_resnet50_4", weights=path)
    x = torch.randn(2, 3, 64, 64)
    assert bb.dim == 2048
    assert torch.equal(bb(x), pooled(src, x))


def mrl_checkpoint(src, ff=None):
    """MRL / fixed-feature files: a DataParallel state dict with the classifier MRL trained (nested heads for
    MRL, a k-input head for ff<k>), which pyred ignores."""
    sd = {f"module.{k}": v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    if ff is None:
        for i, k in enumerate((8, 16, 32, 64, 128, 256, 512, 1024, 2048)):
            sd[f"module.fc.nesting_classifier_{i}.weight"] = torch.randn(1000, k)
        sd["module.fc.nesting_classifier_0.bias"] = torch.randn(1000)
    else:
        sd["module.fc.weight"], sd["module.fc.bias"] = torch.randn(1000, ff), torch.randn(1000)
    return sd


def test_resnet50_mrl_blurpool_layout(tmp_path):
    src = randomize(ref_blurpool(_timm_resnet50()), 2)
    keys = set(src.state_dict())
    assert "layer2.0.conv2.conv.weight" in keys and "layer2.0.downsample.0.blur_filter" in keys
    path = tmp_path / "r50_mrl1_e0_ff2048.pt"
    torch.save(mrl_checkpoint(src), path)
    bb = pyred.Backbone("resnet50_mrl", weights=path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(bb(x), pooled(src, x))
    assert not torch.equal(bb(x), pooled(randomize(_timm_resnet50(), 2), x))  # the blur matters


@pytest.mark.parametrize("k", [8, 64])
def test_fixed_feature_resnet50_reads_the_first_k(tmp_path, k):
    src = randomize(ref_blurpool(_timm_resnet50()), 3)
    path = tmp_path / f"r50_mrl0_e0_ff{k}.pt"
    torch.save(mrl_checkpoint(src, ff=k), path)
    bb = pyred.Backbone(f"resnet50_ff{k}", weights=path)
    x = torch.randn(2, 3, 64, 64)
    assert bb.dim == k
    assert torch.equal(bb(x), pooled(src, x)[:, :k])


def test_paper_models_refuse_pretrained_download():
    with pytest.raises(RuntimeError, match="no pretrained weights for this paper model; pass weights="):
        pyred.Backbone("resnet50_ff16")


def test_torchvision_vgg16_bn_into_timm(tmp_path):
    import torchvision

    torch.manual_seed(4)
    src = randomize(torchvision.models.vgg16_bn().eval(), 4)
    path = tmp_path / "vgg16_bn_l2_eps3.ckpt"
    torch.save(robustness(src.state_dict(), "module."), path)
    bb = pyred.Backbone("vgg16_bn", weights=path)
    assert "torchvision VGG" in bb.weights_source and "robustness" in bb.weights_source
    x = torch.randn(2, 3, 224, 224)
    h = torch.flatten(src.avgpool(src.features(x)), 1)
    want = src.classifier[:5](h)  # fc6, ReLU, dropout, fc7, ReLU: the 4096 features the paper probes
    got = bb(x)
    assert bb.dim == 4096
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got, torch.zeros_like(got))


class RefCifarBottleneck(nn.Module):
    """deep-learning-base architectures/cifar_models/resnet.py's Bottleneck, as the reference defines it."""
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                                                    bias=False), nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return F.relu(out)


class RefCifarResNet50(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 3, 1)
        self.layer2 = self._make_layer(128, 4, 2)
        self.layer3 = self._make_layer(256, 6, 2)
        self.layer4 = self._make_layer(512, 3, 2)
        self.linear = nn.Linear(2048, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(RefCifarBottleneck(self.in_planes, planes, s))
            self.in_planes = planes * 4
        return nn.Sequential(*layers)

    def latent(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.avg_pool2d(out, 4).view(out.size(0), -1)


def test_cifar_resnet50_lightning_layout(tmp_path):
    """A deep-learning-base (PyTorch Lightning) checkpoint of the CIFAR ResNet-50: the network under model. in
    state_dict, beside the trainer's state."""
    src = randomize(RefCifarResNet50(num_classes=100).eval(), 5)
    path = tmp_path / "epoch=99-topk=1.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}, "epoch": 99,
                "global_step": 1000, "pytorch-lightning_version": "1.5.10"}, path)
    bb = pyred.Backbone("cifar_resnet50", weights=path, num_classes=100)
    x = torch.randn(2, 3, 32, 32)
    assert bb.dim == 2048 and bb.model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert torch.equal(bb(x), src.latent(x))
