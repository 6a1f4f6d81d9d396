"""The paper's experiments by name: each expanded plan against its reference script's arguments.

The spot checks below were transcribed by hand from the scripts of nvedant07/diffused-redundancy@ae5569f
(scripts/<name>.sh, cited per test), independently of the shipped table that pyred.paper.transcribe wrote.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pyred.paper import MODELS, VGG_VIT1K_GRID, find
from pyred.paper import experiments as ex
from pyred.paper.transcribe import blocks, expand_script
from pyred.probes.sgd import SGDOptions
from pyred.study.config import load_config
from pyred.study.errors import ConfigError
from pyred.study.methods import METHODS


def runs(name):
    return ex.experiments()[name].runs


def only(name):
    (r,) = runs(name)
    return r


def test_linf_eps4_script_1_runs_seed_5_on_cifar10():
    # scripts/finetuning_imagenet-resnet50rob-linfeps4-1.sh: "for seed in {5,}", 14 fractions, --epochs 50
    # --step_lr 10 --batch_size 256, checkpoint .../robust_imagenet/linf/eps4/r50.ckpt
    r = only("finetuning_imagenet-resnet50rob-linfeps4-1")
    assert (r.model, r.dataset, r.layer, r.method) == ("resnet50_linf_eps4", "cifar10", "penultimate", "random")
    assert r.fractions == (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9)
    assert r.seeds == (5,)
    assert (r.epochs, r.lr_step, r.batch_size, r.weight_decay, r.eval_every) == (50, 10, 256, 5e-4, 5)
    assert MODELS[r.model].checkpoint.endswith("linf/eps4/r50.ckpt")


def test_layerwise_cifar10_layers_12_to_16():
    # scripts/layerwise_finetuning_imagenet-resnet50nonrob-cifar10.sh: seeds {1..5} x layers {12..16} x 9
    # fractions, finetuning_on_middle_layers (weight decay of ImageNet's parameters, validation every epoch)
    got = runs("layerwise_finetuning_imagenet-resnet50nonrob-cifar10")
    assert [(r.layer, r.pool) for r in got] == [("layer3.5", "flatten"), ("layer4.0", "flatten"),
                                                ("layer4.1", "flatten"), ("layer4.2", "flatten"),
                                                ("penultimate", "avg")]
    for r in got:
        assert r.model == "resnet50_nonrob" and r.seeds == (1, 2, 3, 4, 5)
        assert r.fractions == (0.0005, 0.005, 0.05, 0.1, 0.2, 0.4, 0.5, 0.8, 0.9)
        assert (r.epochs, r.lr_step, r.batch_size, r.weight_decay, r.eval_every) == (50, 10, 256, 1e-4, 1)


def test_more_heads_seeds_6_to_10():
    # scripts/more_heads_seed_6-10_resnet50rob-l2eps3-cifar10.sh: seeds {6..10}, fractions 0.1 0.2 0.3, 100/20
    r = only("more_heads_seed_6-10_resnet50rob-l2eps3-cifar10")
    assert (r.model, r.fractions, r.seeds, r.epochs, r.lr_step) == ("resnet50_l2_eps3", (0.1, 0.2, 0.3),
                                                                     (6, 7, 8, 9, 10), 100, 20)
    assert "ensembles" in ex.experiments()["more_heads_seed_6-10_resnet50rob-l2eps3-cifar10"].groups


def test_places365_slurm_array_seeds():
    # scripts/finetuning_imagenet-resnet50nonrob-places365-slurm-1.sh: #SBATCH -a 2-5 -> --seed 2..5; fractions
    # 0.0005 0.001 0.002 0.003; --batch_size 1024 --epochs 50 --step_lr 5
    r = only("finetuning_imagenet-resnet50nonrob-places365-slurm-1")
    assert (r.dataset, r.seeds, r.fractions) == ("places365", (2, 3, 4, 5), (0.0005, 0.001, 0.002, 0.003))
    assert (r.epochs, r.lr_step, r.batch_size, r.weight_decay) == (50, 5, 1024, 5e-4)


def test_fixed_feature_ff8_absolute_sizes():
    # scripts/finetuning_imagenet-resnet50-ff8-allds.sh: --num_features {1,2,4,6} x seeds {1..5} x 4 datasets
    got = runs("finetuning_imagenet-resnet50-ff8-allds")
    assert [r.dataset for r in got] == ["cifar10", "cifar100", "flowers102", "oxford-pets"]
    for r in got:
        assert (r.model, r.sizes, r.fractions, r.seeds) == ("resnet50_ff8", (1, 2, 4, 6), None, (1, 2, 3, 4, 5))
    assert MODELS["resnet50_ff8"].checkpoint == "r50_mrl0_e0_ff8.pt" and MODELS["resnet50_ff8"].dim == 8


def test_vit_in1k_normalised_as_the_reference_did():
    # scripts/finetuning_imagenet-vit-s16-nonrob-allds.sh: the AugReg IN-1k npz, --source_dataset imagenet (so
    # ImageNet mean/std, though the checkpoint was trained with 0.5/0.5), 4 datasets, seeds 1..5 + full at 2
    got = runs("finetuning_imagenet-vit-s16-nonrob-allds")
    assert {r.model for r in got} == {"vit_s16_in1k"} and len(got) == 4
    assert all(r.normalization == "imagenet" and r.full_layer_seeds == (2,) for r in got)
    assert MODELS["vit_s16_in1k"].normalization == "half"
    assert got[0].fractions == VGG_VIT1K_GRID


def test_vit_in21k_flowers_seeds_5_to_10_clean_validation():
    # scripts/finetuning_imagenet21k-vit-s16-nonrob-flowers.sh: "for seed in {5..10}", 100 epochs, step 20
    r = only("finetuning_imagenet21k-vit-s16-nonrob-flowers")
    assert (r.model, r.dataset, r.seeds, r.epochs, r.lr_step) == ("vit_s16_in21k", "flowers102", (5, 6, 7, 8, 9, 10),
                                                                  100, 20)
    assert (r.weight_decay, r.val_augment) == (1e-4, "clean")


def test_pca_least_is_pca_bottom_seed_1():
    # scripts/finetuning_imagenet-resnet50nonrob-cifar10-pca-least.sh: --mode pca-least, "for seed in {1,}",
    # 11 fractions 0.0005 ... 0.9, 50/10
    r = only("finetuning_imagenet-resnet50nonrob-cifar10-pca-least")
    assert (r.method, r.seeds, r.fractions, r.epochs) == ("pca-bottom", (1,), VGG_VIT1K_GRID, 50)
    assert r.val_augment == "reference"


def test_dropout_full_layer_only_script():
    # scripts/finetuning_imagenet-resnet50nonrob-varyingdroprate-allds-1.sh: flowers and pets, the config
    # resnet50_drop_rate_01.yaml, --fraction 1. --seed 2, 20 epochs, step 3, batch 1024
    got = runs("finetuning_imagenet-resnet50nonrob-varyingdroprate-allds-1")
    assert [(r.model, r.dataset, r.fractions, r.seeds) for r in got] == [
        ("resnet50_droprate_0.1", "flowers102", (1.0,), (2,)), ("resnet50_droprate_0.1", "oxford-pets", (1.0,), (2,))]
    assert (got[0].epochs, got[0].lr_step, got[0].batch_size) == (20, 3, 1024)
    assert MODELS["resnet50_droprate_0.1"].checkpoint.endswith("/epoch=84-topk=1.ckpt")


def test_every_script_is_an_experiment_or_says_why_not():
    import pyred.paper

    assert pyred.paper.EXPERIMENTS is ex.experiments() and "layerwise" in pyred.paper.GROUPS
    table = ex._table()
    assert len(table) == 173  # scripts/*.sh at ae5569f
    assert set(ex.experiments()) | set(ex.skipped()) == set(table)
    assert sorted(ex.skipped()) == sorted(n for n in table if n.startswith(("train_scratch_", "pca_")))


def test_every_run_resolves_to_something_pyred_runs():
    from pyred import datasets

    for e in ex.experiments().values():
        assert e.runs, e.name
        assert e.groups, e.name  # every experiment belongs to a figure's group
        for r in e.runs:
            m = MODELS[r.model]
            assert r.dataset in datasets.available() and r.method in METHODS
            SGDOptions(**r.recipe_options())
            grid = r.sizes if r.sizes is not None else r.fractions
            assert grid and all(0 < x <= (m.dim if r.sizes else 1) for x in grid), (e.name, r)
            assert r.layer == "penultimate" or e.module == "finetuning_on_middle_layers"


def test_groups_follow_the_figures():
    assert {e.name for e in ex.select("layerwise")} == {n for n in ex.experiments() if n.startswith("layerwise_")}
    assert all("imagenet" in e.datasets for e in ex.select("imagenet"))
    assert {m for e in ex.select("main") for m in e.models} == {
        "resnet18_nonrob", "resnet18_l2_eps3", "resnet50_nonrob", "resnet50_l2_eps3", "vgg16_bn_nonrob",
        "vgg16_bn_l2_eps3", "wide_resnet50_2_nonrob", "wide_resnet50_2_l2_eps3", "vit_s16_in1k", "vit_s32_in1k"}
    with pytest.raises(ValueError, match="neither an experiment nor a group"):
        ex.select("mian")
    with pytest.raises(ValueError, match="trains a network from scratch"):
        ex.select("train_scratch_resnet50_cifar10")


def test_timm_names_whose_paper_weights_are_files_get_no_paper_entry():
    assert find("vit_small_patch16_224.augreg_in1k") is None  # timm's file for it is another training
    assert find("vit_s16_in1k").checkpoint.startswith("S_16-i1k")
    assert find("resnet50").key == "resnet50_nonrob" and find("resnet50.a1_in1k").epochs == 100


def test_transcribe_expands_loops_arrays_and_wrappers(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    common = "--source_dataset imagenet --finetuning_dataset $ds --model resnet50 --batch_size 256 " \
             "--epochs 50 --step_lr 10 --mode random"
    (scripts / "a.sh").write_text(f"""# python -m x.finetuning --fraction 0.7 --seed 9
python -m x.finetuning {common.replace('$ds', 'cifar10')} --fraction 1. --seed 2
for seed in {{1..3}}
do
for ds in {{"cifar10","flowers"}}
do
python -m x.finetuning {common} --fraction 0.1 --seed $seed
python -m x.finetuning {common} --fraction 0.5 --seed $seed
done
done
for seed in {{1}}
do
python -m x.finetuning {common.replace('$ds', 'cifar100')} --fraction 0.2 --seed $seed
done
""")
    (scripts / "b-1.sh").write_text(f"python -m x.finetuning {common.replace('$ds', 'places365')} --fraction 0.3 "
                                    "--seed 4\n")
    (scripts / "b-2.sh").write_text(f"python -m x.finetuning {common.replace('$ds', 'places365')} --fraction 0.3 "
                                    "--seed 5\n")
    (scripts / "b-slurm.sh").write_text("#SBATCH -a 1-2\nsrun --jobid $SLURM_JOBID bash -c "
                                        "'./partially_inverted_reps/scripts/b-${SLURM_ARRAY_TASK_ID}.sh'\n")
    got = blocks(expand_script(str(scripts / "a.sh"), str(scripts)))
    assert [(b.get("datasets"), b.get("fractions"), b.get("seeds"), b.get("full_layer")) for b in got] == [
        (["cifar10", "flowers"], [0.1, 0.5], [1, 2, 3], None), (["cifar100"], [0.2], [1], None),
        (None, None, None, [["cifar10", 2]])]
    slurm = blocks(expand_script(str(scripts / "b-slurm.sh"), str(scripts)))
    assert [(b["datasets"], b["fractions"], b["seeds"]) for b in slurm] == [(["places365"], [0.3], [4, 5])]


def test_paper_config_sets_everything_and_refuses_overlaps(tmp_path):
    with pytest.raises(ConfigError, match="paper = .* sets the models"):
        load_config(None, paper="finetuning_imagenet-resnet50rob-linfeps4-1", models=["resnet18"], out=str(tmp_path))
    # every missing file at once: the checkpoint (named, with where to get it) and the dataset
    with pytest.raises(ConfigError, match="2 file.*missing: .*linf/eps4/r50.ckpt.*robust-models-transfer.*; "
                                          "dataset cifar10 under"):
        load_config(None, paper="finetuning_imagenet-resnet50rob-linfeps4-1", out=str(tmp_path))


def test_a_group_tells_recipes_of_one_pair_apart(tmp_path):
    """The places365 group runs ResNet-50 on Places365 under three recipes (scripts -slurm-1 ... -6, 50/5,
    100/20, 15/3): one study, the results of each recipe under its own method tag."""
    w, data = tmp_path / "w", tmp_path / "data"
    for e in ex.select("places365"):
        for m in e.models:
            if MODELS[m].needs_file:
                (w / MODELS[m].checkpoint).parent.mkdir(parents=True, exist_ok=True)
                (w / MODELS[m].checkpoint).write_bytes(b"x")
    for split in ("train", "val"):
        (data / "places365" / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / "places365" / split / "a" / "0.jpg")
    cfg = load_config(None, paper="places365", weights_dir=str(w), data_dir=str(data), out=str(tmp_path / "o"))
    r50 = [p for p in cfg.pairs() if p.model.name == "resnet50_nonrob"]
    recipes = {(p.method_tag, p.cfg.recipe_options["epochs"], p.cfg.recipe_options["lr_step"]) for p in r50}
    assert {(e, s) for _, e, s in recipes} == {(50, 5), (100, 20), (15, 3)}
    # the first met (scripts/finetuning_imagenet-resnet50nonrob-places365.sh) keeps the plain name
    assert recipes == {("", 100, 20), (" [epochs 50, lr_step 5]", 50, 5), (" [epochs 15, lr_step 3]", 15, 3)}
    assert all(p.cfg.protocol == "paper" and p.model.normalization == "imagenet" for p in cfg.pairs())
    vit = next(p for p in cfg.pairs() if p.model.name == "vit_s16_in1k")
    assert vit.model.normalization_in(cfg.normalization) == "imagenet"  # the reference's, not the file's 0.5


def _tiny_imagenet(root, classes=3, train=10, val=4):
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / "imagenet" / split / f"n0{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")


@pytest.mark.slow
def test_paper_run_end_to_end(tmp_path):
    """pyred paper run of the robust ResNet-18 on ImageNet-1k, on a synthetic checkpoint in the robustness
    library's layout and a 3-class ImageNet folder: refused while files are missing, then runs and resumes."""
    from test_checkpoints import robustness

    name = "finetuning_imagenet-resnet18rob-l2eps3-imagenet"
    weights, data, out = tmp_path / "weights", tmp_path / "data", tmp_path / "out"
    weights.mkdir()
    data.mkdir()
    cmd = [sys.executable, "-m", "pyred", "paper", "run", name, "--weights-dir", str(weights), "--data-dir",
           str(data), "--out", str(out), "--epochs", "1", "--quiet", "--no-report"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert "2 file(s) missing" in p.stderr and "resnet-18-l2-eps3.ckpt" in p.stderr and "imagenet" in p.stderr
    torch.manual_seed(0)
    import timm

    torch.save(robustness(timm.create_model("resnet18").state_dict(), "module."), weights / "resnet-18-l2-eps3.ckpt")
    _tiny_imagenet(data)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    from pyred.study.store import ResultStore, database

    store = ResultStore.read(database(str(out)))
    try:
        rows = store.db.execute("SELECT model, dataset, layer, method, fraction, seed, accuracy, cka FROM results"
                                ).fetchall()
    finally:
        store.close()
    assert len(rows) == 9 * 5 + 1  # the script's 9 fractions x seeds 1-5, and the full layer
    assert {r[:4] for r in rows} == {("resnet18_l2_eps3", f"imagenet@{data}", "penultimate", "random")}
    assert all(r[6] is not None and 0 <= r[6] <= 1 and r[7] is not None for r in rows)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "already in" in again.stdout
    shown = subprocess.run([sys.executable, "-m", "pyred", "paper", "list", "--group", "imagenet", "--weights-dir",
                            str(weights), "--data-dir", str(data)], capture_output=True, text=True, env=env)
    line = next(x for x in shown.stdout.splitlines() if x.startswith(name))
    assert line.rstrip().endswith("yes")


def test_timm_kwargs_per_model(tmp_path):
    from pyred.study.config import parse
    from pyred.study.identity import identity

    weights = tmp_path / "c.ckpt"
    weights.write_bytes(b"x")
    raw = {"models": [{"name": "cifar_resnet50", "weights": str(weights), "timm_kwargs": {"num_classes": 100}}],
           "datasets": ["digits"], "out": str(tmp_path / "o")}
    cfg = parse(raw)
    assert cfg.models[0].timm_kwargs == (("num_classes", 100),)
    assert identity(cfg).models[0].to_json()["timm_kwargs"] == {"num_classes": 100}
    assert identity(cfg).id != identity(parse({**raw, "models": [{**raw["models"][0], "timm_kwargs": {}}]})).id
    with pytest.raises(ConfigError, match="timm_kwargs: expected a table"):
        parse({**raw, "models": [{**raw["models"][0], "timm_kwargs": [1]}]})
