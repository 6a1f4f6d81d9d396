"""Any torch module and Hugging Face transformers as backbones, texts as datasets, several layers per pass.

The transformers models are tiny, randomly initialised BERT- and GPT-2-style models built from their
config classes and saved to a folder with a word-level tokenizer: nothing is downloaded."""

import numpy as np
import pytest
import torch
from torch import nn

import pyred
from pyred.texts import LabeledTexts

T = pytest.importorskip("transformers")
WORDS = "[PAD] [UNK] [CLS] [SEP] the a cat dog sat on mat ran fast slow big small red blue".split()
TEXTS = ["the cat sat", "a big red dog ran fast on the mat", "blue", "the small cat ran slow on a red mat"]


def tiny(folder, kind, seed=0):
    """A tiny model of ``kind`` ("bert" or "gpt2") and its tokenizer, saved under ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(seed)
    if kind == "bert":
        fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
        model = T.BertModel(T.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=3,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=32))
    else:
        fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[SEP]")
        model = T.GPT2Model(T.GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=3, n_head=2, n_positions=32))
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return model.eval(), str(folder)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("bert"), "bert")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("gpt2"), "gpt2")


def reference(model, folder, texts, k):
    """The model's own hidden state k on a right-padded batch, and the attention mask."""
    tok = T.AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states[k].double(), batch["attention_mask"]


@pytest.mark.parametrize("k", [0, 2, -1])
def test_hidden_states_are_the_models_own_pooled_by_hand(bert, gpt2, k):
    for (model, folder), pool in ((bert, "mean"), (gpt2, "last")):
        bb = pyred.Backbone("hf:" + folder, layer=f"hidden_states[{k}]")
        assert bb.pool == pool and bb.dim == 16 and bb.num_hidden_states == 4
        H, mask = reference(model, folder, TEXTS, k)
        if pool == "mean":  # the mean over the tokens the mask keeps, computed per row
            want = torch.stack([H[i, :int(mask[i].sum())].mean(0) for i in range(len(TEXTS))])
        else:  # the last real token of each row
            want = torch.stack([H[i, int(mask[i].sum()) - 1] for i in range(len(TEXTS))])
        with torch.no_grad():
            got = bb(TEXTS).double()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_every_pooling_by_hand(bert):
    model, folder = bert
    H, mask = reference(model, folder, TEXTS, 1)
    for pool, want in (("cls", H[:, 0]), ("avg", H.mean(1))):
        bb = pyred.Backbone("hf:" + folder, layer="hidden_states[1]", pool=pool)
        with torch.no_grad():
            torch.testing.assert_close(bb(TEXTS).double(), want, rtol=1e-5, atol=1e-6)
    flat = pyred.Backbone("hf:" + folder, layer="hidden_states[1]", pool="flatten", padding="max_length",
                          max_length=12)
    tok = T.AutoTokenizer.from_pretrained(folder)
    batch = tok(TEXTS, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**batch, output_hidden_states=True).hidden_states[1].flatten(1)
        torch.testing.assert_close(flat(TEXTS), want, rtol=1e-5, atol=1e-6)
    assert flat.dim == 12 * 16
    with pytest.raises(ValueError, match="outside the model's 4 hidden states"):
        pyred.Backbone("hf:" + folder, layer="hidden_states[4]")
    with pytest.raises(ValueError, match="not a submodule"):
        pyred.Backbone("hf:" + folder, layer="encoder.layers.9")


def test_left_padding_last_token(gpt2):
    model, folder = gpt2
    bb = pyred.Backbone("hf:" + folder)
    bb.tokenizer.padding_side = "left"
    batch = bb.tokenizer(TEXTS, padding="longest", return_tensors="pt")
    assert (batch["attention_mask"][:, 0] == 0).any()  # some rows padded on the left
    with torch.no_grad():
        H = model(**batch, output_hidden_states=True).hidden_states[-1]
        got = bb(TEXTS)
    torch.testing.assert_close(got, H[:, -1], rtol=1e-5, atol=1e-6)  # left padding: every row ends with its text


def texts(split="test", n=None, edit=None):
    t = list(TEXTS * 3)[:n] if n else list(TEXTS * 3)
    if edit is not None:
        t[edit] = t[edit] + " cat"
    return LabeledTexts(t, [i % 2 for i in range(len(t))], ["a", "b"], "toy", split)


def test_one_pass_for_several_layers_equals_separate_passes(bert, tmp_path):
    _, folder = bert
    layers = ["hidden_states[0]", "hidden_states[3]", "encoder.layer.1.output"]
    together = pyred.extract_features(pyred.Backbone("hf:" + folder), texts(), layers=layers, progress=False,
                                      cache_dir=tmp_path, batch_size=5)
    assert [fs.metadata["layer"] for fs in together] == layers
    for name, fs in zip(layers, together):
        alone = pyred.extract_features(pyred.Backbone("hf:" + folder, layer=name), texts(), progress=False,
                                       batch_size=3)
        np.testing.assert_allclose(np.asarray(fs.X), alone.X, rtol=1e-5, atol=1e-6)
        assert np.array_equal(fs.y, alone.y)
    again = pyred.extract_features(pyred.Backbone("hf:" + folder), texts(), layers=layers, progress=False,
                                   cache_dir=tmp_path)
    assert [fs.metadata["cache"] for fs in again] == ["hit"] * 3
    everything = pyred.extract_features(pyred.Backbone("hf:" + folder), texts(), layers="all", progress=False)
    assert len(everything) == 4


def test_cache_key_follows_the_texts_and_the_weights(bert, tmp_path):
    _, folder = bert
    bb = pyred.Backbone("hf:" + folder)
    first = pyred.extract_features(bb, texts(), cache_dir=tmp_path, progress=False)
    assert first.metadata["cache"] == "computed"
    assert pyred.extract_features(bb, texts(), cache_dir=tmp_path, progress=False).metadata["cache"] == "hit"
    edited = pyred.extract_features(bb, texts(edit=2), cache_dir=tmp_path, progress=False)
    assert edited.metadata["cache"] == "computed" and not np.array_equal(np.asarray(edited.X), np.asarray(first.X))
    _, other = tiny(tmp_path / "other", "bert", seed=1)  # same architecture, other weights
    moved = pyred.extract_features(pyred.Backbone("hf:" + other), texts(), cache_dir=tmp_path, progress=False)
    assert moved.metadata["cache"] == "computed" and moved.metadata["weights"] != first.metadata["weights"]


class Net(nn.Module):
    """A module whose blocks return tuples, the way many research models do."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Pair()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h, _ = self.block(torch.relu(self.conv(x)))
        return self.head(h.mean((2, 3)))


class Pair(nn.Module):
    def forward(self, x):
        return x * 2, x


def test_any_module_as_a_backbone():
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, 3, 8, 8)
    for layer, pool, want in (("conv", "avg", net.conv(x).mean((2, 3))),
                              ("block", "flatten", (2 * torch.relu(net.conv(x))).flatten(1)),
                              ("", "avg", net(x))):
        bb = pyred.Backbone.from_module(net, layer=layer, pool=pool, name="net")
        with torch.no_grad():
            torch.testing.assert_close(bb(x), want)
    bb = pyred.Backbone.from_module(net, layer="conv", pool="avg", name="net")
    with torch.no_grad():
        a, b = bb.forward_layers(x, ["conv", "block"])
    torch.testing.assert_close(b, (2 * torch.relu(net.conv(x))).mean((2, 3)))
    assert bb.measure(x) == 4 and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="not a submodule"):
        pyred.Backbone.from_module(net, layer="nope")
    with pytest.raises(ValueError, match="pool: expected one of"):
        pyred.Backbone.from_module(net, layer="conv", pool="max")


def test_a_module_without_parameters_extracts():
    """(extract_features looked for the device of the module's first parameter, and had none to find)"""
    bb = pyred.Backbone.from_module(nn.Sequential(nn.Tanh(), nn.ReLU()), layer="0", pool="flatten", name="free")
    data = pyred.datasets.LabeledImages(np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(6), np.zeros(6),
                                        ["a"], "free", "test", fingerprint="f")
    fs = pyred.extract_features(bb, data, transform=torch.from_numpy, transform_id="t", progress=False,
                                layers=["0", "1"])
    np.testing.assert_allclose(fs[0].X, np.tanh(np.arange(24, dtype=np.float32).reshape(6, 4)), rtol=1e-6)
    np.testing.assert_allclose(fs[1].X, np.maximum(fs[0].X, 0), rtol=1e-6)


def test_module_backbone_extracts_images_with_its_transform(tmp_path):
    torch.manual_seed(0)
    net = Net().eval()
    images = pyred.datasets.load("digits", "test").subset(np.arange(10))
    import torchvision.transforms as tv

    bb = pyred.Backbone.from_module(net, layer="conv", pool="avg", name="net",
                                    transform=tv.Compose([tv.Resize(8), tv.ToTensor()]), transform_id="resize8")
    fs = pyred.extract_features(bb, images, cache_dir=tmp_path, progress=False)
    assert fs.X.shape == (10, 4) and fs.metadata["transform"] == "custom:resize8"
    assert pyred.extract_features(bb, images, cache_dir=tmp_path, progress=False).metadata["cache"] == "hit"


def test_text_folder(tmp_path):
    for split, n in (("train", 10), ("test", 3)):
        for c in ("neg", "pos"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / c / f"{i}.txt").write_text(f"{c} text {i}", encoding="utf-8")
    train, val, test = (pyred.datasets.load("text-folder", s, root=tmp_path) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 2, 6) and test.classes == ["neg", "pos"]
    assert set(train.texts).isdisjoint(val.texts) and test[0] == ("neg text 0", 0)
    assert train.content_id() != val.content_id()
    with pytest.raises(FileNotFoundError, match="text-folder: no"):
        pyred.datasets.load("text-folder", "test", root=tmp_path / "train")
    with pytest.raises(TypeError, match="texts: expected strings"):
        LabeledTexts(["a", 3], [0, 1], ["x", "y"], "bad", "test")


def text_folder_root(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 8)):
        for c, words in (("animals", ["cat", "dog", "the", "a", "big"]), ("colours", ["red", "blue", "small", "on"])):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / c / f"{i}.txt").write_text(" ".join(rng.choice(words, 6)), encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_a_study_of_every_layer_of_a_language_model(bert, tmp_path, capsys, monkeypatch):
    """pyred run --model hf:PATH --dataset text-folder --data-root DIR --layers all: one pass per split for the 4
    hidden states, results and a DR-vs-depth table and plot per layer; the paper protocol is refused."""
    from pyred.study.cli import main

    _, folder = bert
    data = text_folder_root(tmp_path / "texts")
    out = tmp_path / "run"
    args = ["run", "--model", "hf:" + folder, "--dataset", "text-folder", "--data-root", str(data), "--layers", "all",
            "--fractions", "0.25,0.5", "--seeds", "1,2", "--epochs", "3", "--out", str(out), "--quiet"]
    assert main(args + ["--protocol", "paper"]) == 2
    assert "protocol: 'paper' augments images; texts" in capsys.readouterr().err
    import pyred.features
    import pyred.hf

    loads, verified = [], []
    init, load_complete = pyred.hf.HFBackbone.__init__, pyred.features._load_complete
    monkeypatch.setattr(pyred.hf.HFBackbone, "__init__",
                        lambda self, *a, **k: (loads.append(1), init(self, *a, **k))[1])
    monkeypatch.setattr(pyred.features, "_load_complete", lambda f: (verified.append(f), load_complete(f))[1])
    assert main(args) == 0
    # the model loaded once for its 4 layer entries; each layer's cache of each split looked up once before the
    # one extraction and verified once after it is written -- not again for every layer entry
    assert len(loads) == 1 and len(verified) == 2 * len(set(verified)) == 2 * 4 * 3
    import sqlite3

    with sqlite3.connect(out / "results.sqlite") as c:
        layers = sorted({r[0] for r in c.execute("SELECT layer FROM results")})
    assert layers == [f"hidden_states[{k}]" for k in range(4)]
    report = (out / "report.md").read_text()
    assert "### Across layers" in report and (out / "dr_vs_depth.png").exists()
    # one forward pass per split fed all four layers: their caches were written together
    import glob
    import json

    metas = [json.load(open(p)) for p in glob.glob(str(out / "cache" / "*" / "*" / "meta.json"))]
    assert len(metas) == 4 * 3 and {m["layer"] for m in metas} == set(layers)
    assert main(["run", "--model", "hf:" + folder, "--dataset", "digits", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "hf: models read texts" in capsys.readouterr().err


def test_layer_by_layer_cka_of_a_language_model(bert, tmp_path):
    """pyred.layer_cka over an hf: model's hidden states equals linear CKA of the features extracted layer by
    layer; `pyred cka hf:PATH` writes the map."""
    from pyred.study.cli import main

    _, folder = bert
    bb = pyred.Backbone("hf:" + folder)
    data = texts()
    M, names_a, names_b = pyred.layer_cka(bb, data, samples=len(data), batch_size=5, progress=False)
    assert names_a == names_b == bb.all_layers() and M.shape == (4, 4)
    feats = pyred.extract_features(bb, data, layers="all", progress=False)
    for i in range(4):
        for j in range(4):
            want = pyred.linear_cka(torch.as_tensor(np.asarray(feats[i].X), dtype=torch.float64),
                                    torch.as_tensor(np.asarray(feats[j].X), dtype=torch.float64))
            assert abs(float(M[i, j]) - float(want)) < 1e-4
    root = text_folder_root(tmp_path / "texts")
    assert main(["cka", "hf:" + folder, "--dataset", "text-folder", "--data-root", str(root), "--samples", "10",
                 "--out", str(tmp_path / "cka"), "--quiet"]) == 0
    assert (tmp_path / "cka" / "layer_cka.csv").read_text().startswith("layer,hidden_states[0]")


@pytest.mark.slow
def test_a_study_of_any_module_through_the_python_api(tmp_path):
    """models = ["module:NAME"] with run(cfg, backbones={NAME: Backbone.from_module(...)}): features from the object
    (two of its layers from one pass), its weights digest in the identity; refused without the object."""
    import dataclasses

    import torchvision.transforms as tv

    from pyred.study import ModelSpec, identity, load_config, run
    from pyred.study.errors import StudyError

    torch.manual_seed(0)
    net = Net().eval()
    bb = pyred.Backbone.from_module(net, layer="conv", pool="avg", name="net",
                                    transform=tv.Compose([tv.Resize(8), tv.ToTensor()]), transform_id="resize8")
    cfg = load_config(None, fractions=[0.5], seeds=[1], epochs=2, out=str(tmp_path / "o"))
    models = (ModelSpec("module:net", layer="conv"), ModelSpec("module:net", layer="block"))
    cfg = dataclasses.replace(cfg, models=models, cka=False, report=False)
    with pytest.raises(StudyError, match="backbones: \\['module:net', 'module:net'\\] name backbone objects"):
        run(cfg, progress=False, say=None)
    ident = identity(cfg, {"net": bb})
    other = pyred.Backbone.from_module(Net().eval(), layer="conv", pool="avg", name="net",
                                       transform=tv.Compose([tv.Resize(8), tv.ToTensor()]), transform_id="resize8")
    assert ident.models[0].weights_sha256 != identity(cfg, {"net": other}).models[0].weights_sha256
    run(cfg, progress=False, say=None, backbones={"net": bb})
    import sqlite3

    with sqlite3.connect(tmp_path / "o" / "results.sqlite") as c:
        rows = c.execute("SELECT layer, fraction, accuracy FROM results").fetchall()
    assert {r[0] for r in rows} == {"conv", "block"} and all(r[2] is not None for r in rows)


def test_a_transformers_vision_model_takes_images_through_its_processor(tmp_path):
    """An hf: ViT (no tokenizer, an image processor): hidden_states[k] pooled on the class token, as the model's
    own output on the processor's pixels; features of a dataset's images through extract_features."""
    torch.manual_seed(0)
    model = T.ViTModel(T.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=32), add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path)
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    bb = pyred.Backbone("hf:" + str(tmp_path), layer="hidden_states[1]")
    assert bb.pool == "cls" and bb.dim == 16 and bb.tokenizer is None
    images = pyred.datasets.load("digits", "test").subset(np.arange(6))
    fs = pyred.extract_features(bb, images, progress=False, batch_size=4)
    pixels = torch.stack([bb.transform()(images[j][0]) for j in range(len(images))])
    with torch.no_grad():
        want = model(pixel_values=pixels, output_hidden_states=True).hidden_states[1][:, 0]
    np.testing.assert_allclose(fs.X, want.numpy(), rtol=1e-5, atol=1e-5)
    assert bb.transform_id().startswith("image processor ViTImageProcessor")


def test_a_wrapped_module_feeds_a_feature_stream():
    """FeatureStream over Backbone.from_module: the paper's augmentation with explicit statistics (a wrapped
    module has no pretrained config to read them from), every head trained from one pass."""
    torch.manual_seed(0)
    bb = pyred.Backbone.from_module(Net().eval(), layer="conv", pool="avg", name="net")
    images = pyred.datasets.load("digits", "train").subset(np.arange(40))
    stream = pyred.FeatureStream(bb, images, augment="paper", image_size=16, batch_size=20,
                                 normalization=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    assert stream.dim == 4
    res = pyred.train_probes(stream, None, pyred.draw_subsets(4, [0.5, 1.0], seeds=[1]), epochs=2, eval_every=1,
                             progress=False)
    assert res.weights.shape[1] == 10 and res.eval_epochs == [1, 2]
    with pytest.raises(ValueError, match="normalization: 'model' needs a pyred.Backbone"):
        pyred.FeatureStream(bb, images, augment="paper", image_size=16)


def test_review_fixes_for_hf_backbones(bert, tmp_path):
    """A study's default layer means the last hidden state; flatten needs one text length; ~ is expanded."""
    _, folder = bert
    assert pyred.Backbone("hf:" + folder, layer="penultimate").layer == "hidden_states[-1]"
    with pytest.raises(ValueError, match="padding='max_length'"):
        pyred.Backbone("hf:" + folder, pool="flatten")
    with pytest.raises(ValueError, match="no model folder"):
        pyred.Backbone("hf:./no-such-model-folder")


def test_vit_last_hidden_state_is_the_same_alone_and_with_others(tmp_path):
    """A ViT's own output is its last hidden state after the final layernorm: hidden_states[-1] read alone and
    read beside another layer must agree (and be the model's hidden_states[-1])."""
    torch.manual_seed(0)
    model = T.ViTModel(T.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=32), add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path)
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    bb = pyred.Backbone("hf:" + str(tmp_path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        alone = bb(x)
        _, together = bb.forward_layers(x, ["hidden_states[1]", "hidden_states[-1]"])
        want = model(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 0]
    torch.testing.assert_close(alone, want)
    torch.testing.assert_close(together, want)


def test_pools_of_volumes_and_label_numbering(tmp_path):
    from pyred.module_backbone import pool_tokens

    v = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(pool_tokens(v, "avg"), v.mean(dim=(2, 3, 4)))  # every axis after the channels
    # a class missing from test/ keeps the label train/ gives it
    for split, classes in (("train", ("a", "b", "c")), ("test", ("a", "c"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / "0.txt").write_text(c, encoding="utf-8")
    test = pyred.datasets.load("text-folder", "test", root=tmp_path)
    assert test.classes == ["a", "b", "c"] and sorted(zip(test.texts, test.targets.tolist())) == [("a", 0), ("c", 2)]
    (tmp_path / "test" / "z").mkdir()
    (tmp_path / "test" / "z" / "0.txt").write_text("z", encoding="utf-8")
    with pytest.raises(ValueError, match="has classes \\['z'\\]"):
        pyred.datasets.load("text-folder", "test", root=tmp_path)


def test_module_models_in_a_study_are_told_apart_and_checked(tmp_path):
    import dataclasses

    from pyred.study import ModelSpec, identity, load_config
    from pyred.study.errors import ConfigError
    from pyred.study.validate import validate

    torch.manual_seed(0)
    net = Net().eval()
    cfg = load_config(None, out=str(tmp_path))
    cfg = dataclasses.replace(cfg, models=(ModelSpec("module:net"),))
    a = pyred.Backbone.from_module(net, layer="conv", name="net")
    b = pyred.Backbone.from_module(net, layer="block", name="net")
    assert identity(cfg, {"net": a}).id != identity(cfg, {"net": b}).id  # same weights, another layer
    with pytest.raises(ConfigError, match="pool are the object's own"):
        validate(dataclasses.replace(cfg, models=(ModelSpec("module:net", pool="cls"),)))
    with pytest.raises(ConfigError, match="module: models bring their own transform"):
        validate(dataclasses.replace(cfg, protocol="views"))


def test_sizes_are_part_of_the_identity_and_checked(tmp_path):
    import dataclasses

    from pyred.study import identity, load_config
    from pyred.study.errors import ConfigError
    from pyred.study.methods import METHODS
    from pyred.study.validate import validate

    cfg = load_config(None, out=str(tmp_path))
    four, eight = dataclasses.replace(cfg, sizes=(4,)), dataclasses.replace(cfg, sizes=(8,))
    assert identity(four).id != identity(eight).id and identity(four).to_json()["sizes"] == [4]
    with pytest.raises(ConfigError, match="give fractions or sizes"):
        validate(dataclasses.replace(cfg, sizes=(4,), fractions=(0.1,)))
    with pytest.raises(ValueError, match="sizes: \\[9\\] exceed the layer's 8 features"):
        METHODS["random"].plans(dataclasses.replace(cfg, sizes=(2, 9), fractions=None), 8)
    assert len(METHODS["random"].plans(dataclasses.replace(cfg, sizes=(2, 4), fractions=None), 8)[0].subsets) \
        == 2 * 5 + 1


def test_hf_paths_in_a_toml_are_relative_to_it(bert, tmp_path):
    import shutil

    from pyred.study.config import load_config

    _, folder = bert
    shutil.copytree(folder, tmp_path / "study" / "lm")
    (tmp_path / "study" / "texts" / "train" / "a").mkdir(parents=True)
    (tmp_path / "study" / "texts" / "test" / "a").mkdir(parents=True)
    toml = tmp_path / "study" / "s.toml"
    toml.write_text('models = [{ name = "hf:./lm", layers = "all" }]\n'
                    'datasets = [{ name = "text-folder", root = "texts" }]\n')
    cfg = load_config(str(toml), out=str(tmp_path / "o"))
    assert cfg.models[0].name == "hf:" + str(tmp_path / "study" / "lm") and len(cfg.models) == 4
