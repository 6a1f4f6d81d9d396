"""Checkpoint formats the paper's backbones come in, each written here from a random-init model."""

import numpy as np
import pytest
import torch

import pyred
from pyred import paper
from pyred.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    return pyred.Backbone("resnet18", pretrained=False).model


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def robustness(state, prefix):
    """A robustness-library checkpoint in its AttackerModel's layout: ``normalizer``, ``model`` (the network)
    and ``attacker``, whose Attacker holds its own ``normalize`` and ``model`` (the same network again);
    training state beside it. (The normalizers' buffers were once written here as attacker.normalizer.*,
    which real files do not hold: they hold attacker.normalize.*, which pyred then refused.)"""
    out = {f"{prefix}model.{k}": v for k, v in state.items()}
    out.update({f"{prefix}attacker.model.{k}": v.clone() for k, v in state.items()})
    for who in (f"{prefix}normalizer.", f"{prefix}attacker.normalize."):
        out[f"{who}new_mean"] = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        out[f"{who}new_std"] = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return {"model": out, "epoch": 90, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}


FORMATS = {
    "plain.pth": lambda sd: sd,
    "wrapped-model.pt": lambda sd: {"model": sd, "epoch": 3},
    "wrapped-state_dict.pth": lambda sd: {"state_dict": sd, "hyper_parameters": {"lr": 0.1}},
    "dataparallel.pth": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "robust-module.ckpt": lambda sd: robustness(sd, "module."),
    "robust-plain.ckpt": lambda sd: robustness(sd, ""),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_torch_formats_load_exactly(source, tmp_path, name):
    path = tmp_path / name
    torch.save(FORMATS[name]({k: v.clone() for k, v in source.state_dict().items()}), path)
    bb = pyred.Backbone("resnet18", pretrained=False, weights=path)
    same_weights(bb.model, source)
    assert str(path) in bb.weights_source
    if name.startswith("robust"):
        assert "robustness" in bb.weights_source


def test_safetensors(source, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    same_weights(pyred.Backbone("resnet18", pretrained=False, weights=path).model, source)


def augreg_npz(vit, path):
    """Writes a timm VisionTransformer in the AugReg (JAX) .npz layout (inverse of timm's converter)."""
    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    D = vit.embed_dim
    H = vit.blocks[0].attn.num_heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
         "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
         "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    for i in range(len(vit.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[p + f"MultiHeadDotProductAttention_1/{n}/kernel"] = qkv_w[j * D:(j + 1) * D].T.reshape(D, H, D // H)
            w[p + f"MultiHeadDotProductAttention_1/{n}/bias"] = qkv_b[j * D:(j + 1) * D].reshape(H, D // H)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(H, D // H, D)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_augreg_npz(tmp_path):
    kw = dict(img_size=32, depth=2)
    torch.manual_seed(2)
    src = pyred.Backbone("vit_tiny_patch16_224", pretrained=False, **kw)
    path = tmp_path / "S_16-i1k-tiny.npz"
    augreg_npz(src.model, path)
    bb = pyred.Backbone("vit_tiny_patch16_224", pretrained=False, weights=path, **kw)
    same_weights(bb.model, src.model)
    assert "augreg npz" in bb.weights_source
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(bb(x), src(x))
    with pytest.raises(ValueError, match="loads into timm Vision Transformers only"):
        pyred.Backbone("resnet18", pretrained=False, weights=path)


def test_wrong_checkpoint_lists_unmatched_keys(source, tmp_path):
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4.1.")}
    sd["projector.weight"] = torch.zeros(3, 3)
    sd["fc.weight"] = torch.zeros(7, 512)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        pyred.Backbone("resnet18", pretrained=False, weights=tmp_path / "bad.pth")
    msg = str(err.value)
    assert msg.startswith(f"weights: {tmp_path / 'bad.pth'} does not fit ResNet")
    assert "12 keys missing from the checkpoint: layer4.1.conv1.weight" in msg and "(12 in all)" in msg
    assert "1 keys not in the model: projector.weight" in msg
    assert "fc.weight (7, 512) vs (1000, 512)" in msg
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "nostate.pth")
    with pytest.raises(ValueError, match="does not hold a state dict of tensors.*'acc', 'epoch'"):
        pyred.Backbone("resnet18", pretrained=False, weights=tmp_path / "nostate.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a checkpoint torch can load safely"):
        pyred.Backbone("resnet18", pretrained=False, weights=tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="weights: no file at"):
        pyred.Backbone("resnet18", pretrained=False, weights=tmp_path / "missing.pth")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a timm/AugReg ViT checkpoint"):
        load_checkpoint(pyred.Backbone("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1).model,
                        tmp_path / "other.npz")


def test_tagged_names():
    assert pyred.Backbone("resnet18.tv_in1k", pretrained=False).dim == 512
    with pytest.raises(ValueError, match="'resnet18' has no pretrained tag 'nope'; its tags: .*tv_in1k"):
        pyred.Backbone("resnet18.nope", pretrained=False)
    with pytest.raises(ValueError, match="'resnet18x' is not a timm model; similar: .*resnet18"):
        pyred.Backbone("resnet18x", pretrained=False)


def test_paper_registry():
    import timm

    for m in paper.MODELS.values():
        arch, _, tag = m.timm_name.partition(".")
        assert arch in timm.list_models(), m.key
        if tag:
            assert m.timm_name in timm.list_pretrained(), m.key
        assert m.checkpoint == "timm" or m.checkpoint_format in ("robustness", "augreg npz", "MRL", "lightning")
        assert (m.lr_step * 5 == m.epochs or m.key.startswith(("resnet50_drop", "resnet50_decov"))) \
            and all(0 < f < 1 for f in m.fractions)
    assert paper.find("resnet50.a1_in1k").key == "resnet50_nonrob" and paper.find("resnet50").epochs == 100
    assert paper.find("resnet18") is None  # timm's default resnet18 is a1_in1k, not the paper's tv_in1k
    assert paper.find("vit_small_patch16_224.augreg_in21k").seeds == tuple(range(1, 11))
    assert paper.find("tf_efficientnet_lite0") is None
    assert paper.MODELS["vit_s16_in1k"].normalization == "half"
    assert paper.MODELS["vit_s16_in1k"].paper_normalization == "imagenet"
    assert paper.recipe_defaults("resnet18.tv_in1k", "flowers102") == dict(epochs=50, lr_step=10,
                                                                            weight_decay=1e-4, batch_size=256)
    assert paper.recipe_defaults("tf_efficientnet_lite0", "digits") == {}
    # the user's values win; epochs alone rescale the step (no stale 10-of-50 step for 4 epochs)
    assert paper.resolve_options("resnet18_nonrob", "cifar10", "sgd", {"epochs": 4}) == dict(
        epochs=4, weight_decay=5e-4, batch_size=256)
    assert paper.resolve_options("resnet18_nonrob", "cifar10", "sgd", {"weight_decay": 0.0})["weight_decay"] == 0.0
    assert paper.resolve_options("resnet18_nonrob", "cifar10", "ridge", {}) == {}
    assert paper.fraction_grid("vit_small_patch32_224.augreg_in21k") == paper.VIT21K_GRID


def test_paper_normalization_option():
    bb = pyred.Backbone("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    own = bb.transform(paper=True, size=32)
    mismatch = bb.transform(paper=True, size=32, normalization="imagenet")
    assert list(own.transforms[-1].mean) == [0.5, 0.5, 0.5]
    assert list(mismatch.transforms[-1].mean) == [0.485, 0.456, 0.406]
    assert bb.transform_id(paper=True, size=32) != bb.transform_id(paper=True, size=32, normalization="imagenet")
    with pytest.raises(ValueError, match="normalization: expected one of"):
        bb.transform(paper=True, normalization="cifar")


def test_paper_backbone_needs_the_file_where_timm_has_none(source, tmp_path):
    with pytest.raises(ValueError, match="weights: 'resnet50_l2_eps3' needs the checkpoint resnet-50-l2-eps3.ckpt "
                                         "\\(robustness format, from .*Salman et al. 2020"):
        paper.backbone("resnet50_l2_eps3")
    with pytest.raises(ValueError, match="key: 'resnet50_l2' is not one of the paper's models; did you mean"):
        paper.backbone("resnet50_l2")
    path = tmp_path / "resnet-18-l2-eps3.ckpt"
    torch.save(robustness({k: v.clone() for k, v in source.state_dict().items()}, "module."), path)
    bb = paper.backbone("resnet18_l2_eps3", weights=path)
    same_weights(bb.model, source)
    assert bb.dim == paper.MODELS["resnet18_l2_eps3"].dim


@pytest.mark.slow
def test_the_tables_widths_are_the_models():
    """d in pyred.paper.MODELS is what each timm architecture's penultimate layer gives."""
    seen = {}
    for m in paper.MODELS.values():
        if m.timm_name not in seen:
            seen[m.timm_name] = pyred.Backbone(m.timm_name, pretrained=False).dim
        assert seen[m.timm_name] == m.dim, m.key
