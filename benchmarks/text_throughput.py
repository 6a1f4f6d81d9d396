"""Language models through pyred: ``python benchmarks/text_throughput.py [--texts N] [--out FILE]``.

1. texts/s of ``extract_features`` with an ``hf:`` backbone (tokenising inside, pooling, to numpy) against a
   bare ``model(**tokenizer(batch))`` loop in the same process, on a random BERT-style encoder (6 layers,
   width 384, word-level tokenizer, synthetic 40-word texts, batches of 32): one layer, and every hidden
   state in one pass (``layers="all"``, where the bare loop asks for ``output_hidden_states``); 7 interleaved
   (bare, pyred) pairs, the median of their ratios.
2. The wall time of a 12-layer DR sweep (13 hidden states, the paper's 14 fractions x 5 seeds + the full
   layer, sgd 100 epochs, CKA) on a small text-folder corpus (2 classes, 400 train / 100 test texts).
3. Peak resident memory of extracting 32 layers of width 8,192 (a synthetic module: each layer an
   elementwise map of the last) for 4,000 samples into the cache -- n x d x L float32 would be 4.2 GB --,
   in a subprocess.

Prints markdown (and writes it to --out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

WORDS = ["[PAD]", "[UNK]"] + [f"w{i}" for i in range(2000)]


def tiny_bert(folder: str, layers: int, width: int) -> str:
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    torch.manual_seed(0)
    T.BertModel(T.BertConfig(vocab_size=len(WORDS), hidden_size=width, num_hidden_layers=layers,
                             num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
                             max_position_embeddings=128)).save_pretrained(folder)
    return folder


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, 2000, 40)) for _ in range(n)]


def throughput(folder: str, n: int) -> list[str]:
    import pyred
    from pyred.texts import LabeledTexts

    texts = corpus(n)
    data = LabeledTexts(texts, [i % 2 for i in range(n)], ["a", "b"], "bench", "test")
    bb = pyred.Backbone("hf:" + folder)
    lines = ["| road | texts/s, best (bare loop's best) | pyred / bare, median of 7 pairs (range) |", "|---|---|---|"]
    for label, layers in (("one layer (the last hidden state)", None), ("every hidden state, one pass", "all")):
        def bare(layers: str | None = layers) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                for s in range(0, n, 32):
                    batch = bb.tokenizer(texts[s:s + 32], max_length=128, padding="longest", truncation=True,
                                         return_tensors="pt")
                    bb.model(**batch, output_hidden_states=layers is not None)
            return n / (time.perf_counter() - start)

        def ours(layers: str | None = layers) -> float:
            start = time.perf_counter()
            pyred.extract_features(bb, data, batch_size=32, layers=layers, progress=False)
            return n / (time.perf_counter() - start)

        bare()  # warm-up
        runs = [(bare(), ours()) for _ in range(7)]  # interleaved pairs, so the VM's drift hits both alike
        ratios = sorted(o / b for b, o in runs)
        b, o = max(r[0] for r in runs), max(r[1] for r in runs)
        lines.append(f"| {label} | {o:.0f} (bare {b:.0f}) | {ratios[3]:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) |")
    return lines


def sweep(folder: str, root: str) -> list[str]:
    for split, n in (("train", 200), ("test", 50)):
        for c in range(2):
            os.makedirs(os.path.join(root, split, f"c{c}"), exist_ok=True)
            rng = np.random.default_rng(c)
            for i, t in enumerate(corpus(n, seed=100 * c + (split == "test"))):
                words = t.split()
                words[:10] = [f"w{int(x)}" for x in rng.integers(1000 * c, 1000 * c + 1000, 10)]  # a class signal
                with open(os.path.join(root, split, f"c{c}", f"{i}.txt"), "w") as f:
                    f.write(" ".join(words))
    out = os.path.join(root, "..", "run")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pyred", "run", "--model", "hf:" + folder, "--dataset", "text-folder",
                    "--data-root", root, "--layers", "all", "--out", out, "--quiet", "--no-report"], check=True)
    return [f"12-layer DR sweep (13 hidden states x 71 heads, sgd 100 epochs, CKA; 360 train / 40 val / 100 test "
            f"texts, width 128): {time.perf_counter() - start:.0f} s"]


WIDE = '''
import resource, sys, numpy as np, torch, pyred
class Deep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Tanh() for _ in range(32))
    def forward(self, x):
        for b in self.blocks:
            x = b(x * 1.01)
        return x
data = pyred.datasets.LabeledImages(np.random.default_rng(0).standard_normal((4000, 8192)).astype(np.float32),
                                    np.arange(4000), np.zeros(4000, dtype=np.int64), ["a"], "wide", "test",
                                    fingerprint="bench")
bb = pyred.Backbone.from_module(Deep(), layer="blocks.0", pool="flatten", name="deep")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = pyred.extract_features(bb, data, transform=torch.from_numpy, transform_id="tensor", batch_size=256,
                             layers=[f"blocks.{i}" for i in range(32)], cache_dir=sys.argv[1], progress=False)
print(len(out), out[0].X.shape, before // 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
'''


def wide(cache: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", WIDE, cache], capture_output=True, text=True, check=True)
    parts = r.stdout.split()
    layers, before, peak = parts[0], parts[-2], parts[-1]
    return [f"32 layers x 8,192 wide, 4,000 samples into the cache ({layers} FeatureSets; n x d x L float32 = 4.2 GB): "
            f"peak RSS {peak} MB ({before} MB before extracting: the data alone is 131 MB)"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--out")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = throughput(tiny_bert(os.path.join(tmp, "bert6"), 6, 384), args.texts)
        lines += [""] + sweep(tiny_bert(os.path.join(tmp, "bert12"), 12, 128), os.path.join(tmp, "corpus"))
        lines += [""] + wide(os.path.join(tmp, "cache"))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
