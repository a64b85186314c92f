#!/usr/bin/env python3
"""End-to-end batch-1 gain from zero skipping (issue 15 point 4).

For each model and each of the first N Fashion-MNIST test images (preprocessed
as `permdnn eval` does: x/255, mean 0.2860, std 0.3530), runs

  permdnn run MODEL --input IMG --profile                      (path and input density per PermDiagMatMul)
  permdnn run MODEL --input IMG --bench --cpu-time --zero-skip never|auto

and prints a Markdown table: the measured input density of every compressed
FC layer (mean over the images), the crossover the runtime measured for it,
how often it skipped, and the median latency without and with skipping.

  scripts/zero-skip.py [--permdnn BIN] [--images N] [--min-time S] MODEL.onnx...
"""
import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np

IDX = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def images(n, folder):
    with gzip.open(IDX) as f:
        data = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    paths = []
    for i in range(n):
        x = ((data[i].astype(np.float32) / 255.0 - 0.2860) / 0.3530).reshape(1, 1, 28, 28).astype(np.float32)
        p = os.path.join(folder, f"img{i}.npy")
        np.save(p, x)
        paths.append(p)
    return paths


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


LINE = re.compile(r"^(\S+)\s+PermDiagMatMul\s+\S+\s+\S+\s+(\S+) \(input density ([0-9.]+), skips below ([0-9.]+)\)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--permdnn", default="build/release/src/permdnn")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--min-time", default="0.2")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        imgs = images(a.images, tmp)
        rows = []
        for m in a.models:
            layers = {}  # name -> [densities], crossover, skips
            t = {"never": [], "auto": []}
            for img in imgs:
                for line in run([a.permdnn, "run", m, "--input", img, "--profile"]).splitlines():
                    g = LINE.match(line)
                    if g:
                        name, kernel, dens, cross = g.group(1), g.group(2), float(g.group(3)), float(g.group(4))
                        e = layers.setdefault(name, {"d": [], "cross": cross, "skips": 0})
                        e["d"].append(dens)
                        e["skips"] += "sparse_input" in kernel
                for mode in ("never", "auto"):
                    js = os.path.join(tmp, "t.json")
                    run([a.permdnn, "run", m, "--input", img, "--bench", "--cpu-time", "--min-time", a.min_time,
                         "--zero-skip", mode, "--json", js])
                    with open(js) as f:
                        t[mode].append(json.load(f)[0]["median_s"] * 1e3)
            never, auto = statistics.median(t["never"]), statistics.median(t["auto"])
            desc = "; ".join(f"{n} {statistics.mean(e['d']):.3f} (crossover {e['cross']:.3f}, skipped {e['skips']}/{len(e['d'])})"
                             for n, e in sorted(layers.items()))
            rows.append((os.path.basename(m), desc, never, auto))
        print("| model | PermDiagMatMul input density, mean over images (crossover measured at load; images where it skipped) "
              "| never skip, ms (median over images) | auto, ms | gain |")
        print("|---|---|---|---|---|")
        for name, desc, never, auto in rows:
            print(f"| {name} | {desc} | {never:.4f} | {auto:.4f} | {never / auto:.2f}x |")


if __name__ == "__main__":
    main()
