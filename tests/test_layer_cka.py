import numpy as np
import pytest
import torch

import pyred
from pyred.study.cli import main


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False)
    data = pyred.datasets.load("digits", "test")
    return bb, data


@pytest.mark.parametrize("kernel, minibatch", [("linear", None), ("rbf", None), ("linear", 8)])
def test_a_network_with_itself(net_and_data, kernel, minibatch):
    bb, data = net_and_data
    M, names_a, names_b = pyred.layer_cka(bb, data, samples=24, kernel=kernel, minibatch=minibatch, progress=False)
    assert names_a == names_b == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert M.shape == (5, 5)
    torch.testing.assert_close(torch.diagonal(M), torch.ones(5, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(M, M.T, rtol=1e-9, atol=1e-12)


def test_equals_linear_cka_of_the_extracted_layers(net_and_data):
    bb, data = net_and_data
    layers = ["layer1.1", "layer3", "layer4"]
    M, _, _ = pyred.layer_cka(bb, data, layers_a=layers, samples=20, progress=False)
    feats = []
    for layer in layers:
        one = pyred.Backbone("resnet18", pretrained=False, layer=layer, pool="flatten")
        one.model.load_state_dict(bb.model.state_dict())
        sub = pyred.datasets.LabeledImages(data.source, data.indices[:20], data.targets[:20], data.classes, data.name,
                                           data.split, to_image=data._to_image)
        feats.append(np.asarray(pyred.extract_features(one, sub, progress=False).X, dtype=np.float64))
    for i in range(3):
        for j in range(3):
            assert float(M[i, j]) == pytest.approx(pyred.linear_cka(feats[i], feats[j]), rel=1e-6)


def test_two_networks_and_bad_layers(net_and_data):
    bb, data = net_and_data
    torch.manual_seed(1)
    other = pyred.Backbone("resnet18", pretrained=False)
    M, a, b = pyred.layer_cka(bb, data, layers_a=["layer1", "layer4"], backbone_b=other, layers_b=["layer2"],
                              samples=12, pool="avg", progress=False)
    assert M.shape == (2, 1) and a == ["layer1", "layer4"] and b == ["layer2"]
    assert bool(((M >= 0) & (M <= 1 + 1e-9)).all())
    M2, a2, b2 = pyred.layer_cka(bb, data, layers_a=["layer1"], layers_b=["layer2", "layer1"], samples=12,
                                 progress=False)
    assert M2.shape == (1, 2) and b2 == ["layer2", "layer1"] and float(M2[0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"layers_a: 'layer9' is not a module of resnet18; close names: \['layer"):
        pyred.layer_cka(bb, data, layers_a=["layer9"], samples=8, progress=False)
    with pytest.raises(ValueError, match="kernel: expected one of"):
        pyred.layer_cka(bb, data, samples=8, kernel="cosine", progress=False)
    with pytest.raises(ValueError, match="sigma: expected a number > 0"):
        pyred.layer_cka(bb, data, samples=8, kernel="rbf", sigma=0, progress=False)
    with pytest.raises(ValueError, match="minibatch: expected an integer >= 4"):
        pyred.layer_cka(bb, data, samples=8, minibatch=2, progress=False)


@pytest.mark.slow
def test_cka_command_writes_matrix_csv_and_heatmap(tmp_path, capsys):
    out = tmp_path / "cka"
    assert main(["cka", "resnet18", "--random-init", "--samples", "12", "--layers", "layer1,layer2,layer4",
                 "--out", str(out), "--quiet"]) == 0
    M = np.load(out / "layer_cka.npy")
    assert M.shape == (3, 3) and np.allclose(np.diag(M), 1.0)
    csv = (out / "layer_cka.csv").read_text().splitlines()
    assert csv[0] == "layer,layer1,layer2,layer4" and len(csv) == 4
    assert (out / "layer_cka.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["cka", "resnet18", "--random-init", "--layers", "layr1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "close names" in err[0]
