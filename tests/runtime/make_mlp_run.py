#!/usr/bin/env python3
"""Writes a synthetic permdnn run directory (docs/run-format.md) for an mlp
with random weights, for the runtime benchmark in docs/runtime.md:

    tests/runtime/make_mlp_run.py OUT_DIR --sizes 784,1024,1024,10 --p 8 [--seed 1]

--p 1 writes all layers dense; otherwise every layer but the last is
permdiag with that p (the SPEC default rule: the classifier stays dense).
Plain Python (no NumPy): .npy files are written by hand."""
import argparse, array, json, os, random, struct


def write_npy(path, descr, shape, data):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(data.tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--sizes", default="784,1024,1024,10")
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--input-shape", default="1,28,28", help="C,H,W of one sample (product = first size)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.out, "tensors"), exist_ok=True)
    layers = [{"name": "flatten", "type": "flatten"}]
    n_fc = len(sizes) - 1
    for i in range(n_fc):
        n_in, n_out, name = sizes[i], sizes[i + 1], "fc%d" % (i + 1)
        t = lambda k: "tensors/%s.%s.npy" % (name, k)
        p = a.p if (a.p > 1 and i + 1 < n_fc) else 1
        bias = array.array("f", [rng.gauss(0, 0.01) for _ in range(n_out)])
        write_npy(os.path.join(a.out, t("bias")), "<f4", [n_out], bias)
        if p > 1:
            mb, nb = -(-n_out // p), -(-n_in // p)
            std = (2.0 / -(-n_in // p)) ** 0.5
            offs = array.array("H", [rng.randrange(p) for _ in range(mb * nb)])
            vals = array.array("f", [0.0] * (mb * nb * p))
            for I in range(mb):
                for J in range(nb):
                    for c in range(p):
                        col = J * p + (c + offs[I * nb + J]) % p
                        if I * p + c < n_out and col < n_in:  # padded positions stay 0
                            vals[(I * nb + J) * p + c] = rng.gauss(0, std)
            write_npy(os.path.join(a.out, t("values")), "<f4", [mb, nb, p], vals)
            write_npy(os.path.join(a.out, t("offsets")), "<u2", [mb, nb], offs)
            layer = {"compress": {"kind": "permdiag", "p": p},
                     "tensors": {"values": t("values"), "offsets": t("offsets"), "bias": t("bias")}}
        else:
            std = (2.0 / n_in) ** 0.5
            w = array.array("f", [rng.gauss(0, std) for _ in range(n_out * n_in)])
            write_npy(os.path.join(a.out, t("weight")), "<f4", [n_out, n_in], w)
            layer = {"compress": {"kind": "dense"}, "tensors": {"weight": t("weight"), "bias": t("bias")}}
        layers.append(dict({"name": name, "type": "linear", "in": n_in, "out": n_out}, **layer))
        if i + 1 < n_fc:
            layers.append({"name": "relu%d" % (i + 1), "type": "relu"})
    model = {"format": "permdnn-run/1", "model": "mlp",
             "input": {"shape": [int(d) for d in a.input_shape.split(",")], "layout": "NCHW", "scale": 1 / 255, "mean": 0.2860, "std": 0.3530},
             "num_classes": sizes[-1], "layers": layers}
    with open(os.path.join(a.out, "model.json"), "w") as f:
        json.dump(model, f, indent=1)


if __name__ == "__main__":
    main()
