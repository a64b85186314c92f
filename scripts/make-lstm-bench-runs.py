#!/usr/bin/python3
"""Writes the run directories of the recurrent runtime benchmark
(docs/recurrent.md, "Runtime"): one LSTM layer at the NT-LSTM shape of
DESIGN.md's reference table (input 600, hidden 600, 4 gates: the
[x; h; 1] = 1201 → 2400 product), output "last", then a 600→10 dense fc,
random weights (seeded), dense and permdiag at each p given.

    scripts/make-lstm-bench-runs.py OUT_DIR [--steps 32] [--p 8] [--hidden 600] [--in 600]

Writes OUT_DIR/lstm-dense and OUT_DIR/lstm-p<P> (docs/run-format.md);
`permdnn export` turns them into ONNX (LSTM / PermDiagLSTM). Needs numpy
(Debian python3-numpy, in /usr/bin/python3).
"""
import argparse
import json
import os

import numpy as np


def write(dirname, name, arr):
    rel = f"tensors/{name}.npy"
    np.save(os.path.join(dirname, rel), arr)
    return rel


def make_run(out, p, steps, inp, hidden, seed):
    d = os.path.join(out, "lstm-dense" if p == 1 else f"lstm-p{p}")
    os.makedirs(os.path.join(d, "tensors"), exist_ok=True)
    rng = np.random.default_rng(seed)
    gh = 4 * hidden
    tensors = {}
    for m, cols in (("ih", inp), ("hh", hidden)):
        if p == 1:
            w = (rng.standard_normal((gh, cols)) / np.sqrt(cols)).astype(np.float32)
            tensors[f"{m}.weight"] = write(d, f"rnn1.{m}.weight", w)
        else:
            mb, nb = gh // p, (cols + p - 1) // p
            vals = (rng.standard_normal((mb, nb, p)) / np.sqrt(nb)).astype(np.float32)
            offs = rng.integers(0, p, size=(mb, nb)).astype(np.uint16)
            tensors[f"{m}.values"] = write(d, f"rnn1.{m}.values", vals)
            tensors[f"{m}.offsets"] = write(d, f"rnn1.{m}.offsets", offs)
    for b in ("bias_ih", "bias_hh"):
        tensors[b] = write(d, f"rnn1.{b}", (0.1 * rng.standard_normal(gh)).astype(np.float32))
    fc_w = write(d, "fc.weight", (rng.standard_normal((10, hidden)) / np.sqrt(hidden)).astype(np.float32))
    fc_b = write(d, "fc.bias", np.zeros(10, np.float32))
    compress = {"kind": "dense"} if p == 1 else {"kind": "permdiag", "p": p}
    doc = {
        "format": "permdnn-run/1", "model": "lstm",
        "input": {"shape": [steps, inp], "layout": "TF", "scale": 1.0, "mean": 0.0, "std": 1.0},
        "num_classes": 10,
        "layers": [
            {"name": "rnn1", "type": "lstm", "in": inp, "hidden": hidden, "bidirectional": False,
             "output": "last", "compress": compress, "tensors": tensors},
            {"name": "fc", "type": "linear", "in": hidden, "out": 10, "compress": {"kind": "dense"},
             "tensors": {"weight": fc_w, "bias": fc_b}},
        ],
    }
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--p", default="8")
    ap.add_argument("--hidden", type=int, default=600)
    ap.add_argument("--in", dest="inp", type=int, default=600)
    a = ap.parse_args()
    make_run(a.out, 1, a.steps, a.inp, a.hidden, 1)
    for p in (int(x) for x in a.p.split(",")):
        assert a.hidden % p == 0, "hidden must be a multiple of p"
        make_run(a.out, p, a.steps, a.inp, a.hidden, p)


if __name__ == "__main__":
    main()
