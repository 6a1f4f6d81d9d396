"""Images per second of the paper's online stream (FeatureStream) on the benchmark device.

    python benchmarks/stream_throughput.py [--model resnet50] [--images 1024] [--batch 256] [--size 224]

Random-init timm backbone (no weights needed), synthetic 256 x 256 RGB images, the
penultimate layer. Rows: the bare backbone forward on ready tensors (the floor), and a
pass of the stream with the augmentation on the CPU (PIL, in DataLoader workers) or on
the device, with and without AMP. Prints a markdown table (appended to PYRED_BENCH_OUT
when set). Used by benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


class Synthetic(torch.utils.data.Dataset):
    def __init__(self, n, size=256):
        from PIL import Image

        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
        self.targets = rng.integers(0, 10, n)
        self.classes, self.name, self.split = [str(c) for c in range(10)], "synthetic", "train"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet50")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = p.parse_args()
    import pyred

    device = torch.device(os.environ.get("PYRED_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
    bb = pyred.Backbone(args.model, pretrained=False).to(device)
    data = Synthetic(args.images)
    rows = []

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    for amp in (False, True):
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            bb(x)
            sync()
            start = time.perf_counter()
            for _ in range(max(1, args.images // args.batch)):
                bb(x)
            sync()
        seconds = time.perf_counter() - start
        rows.append((f"bare forward on ready tensors{' (AMP)' if amp else ''}",
                     args.batch * max(1, args.images // args.batch) / seconds))
    for on, amp in (("cpu", False), ("cpu", True), ("device", False), ("device", True)):
        s = pyred.FeatureStream(bb, data, batch_size=args.batch, image_size=args.size, device=device,
                                num_workers=args.workers, augment_on=on, amp=amp)
        for _ in s:  # warm-up pass
            pass
        for _ in s:
            pass
        sync()
        rows.append((f"stream, augmentation on the {on}{' (AMP)' if amp else ''}, {args.workers} workers",
                     s.last_pass["images_per_s"]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"FeatureStream throughput: {args.model} random-init at {args.size} px, batch {args.batch}, "
             f"{args.images} images, {name}", "", "| what | images/s |", "|---|---|"]
    lines += [f"| {what} | {ips:.0f} |" for what, ips in rows]
    table = "\n".join(lines)
    print(table)
    out = os.environ.get("PYRED_BENCH_OUT")
    if out:
        with open(out, "a") as f:
            f.write(table + "\n\n")


if __name__ == "__main__":
    main()
