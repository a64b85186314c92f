#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into fuzz/corpus/<target>/
(docs/reliability.md). Plain Python (no NumPy); deterministic, so rerunning it
rewrites the same files:

    fuzz/make_seeds.py [REPO_ROOT]

Seeds are small valid files of every kind, and a few near misses: the fuzzer
finds the rest. The onnx seeds are the models already in fuzz/corpus/onnx/."""
import array, gzip, io, json, os, random, struct, sys, zipfile

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def npy(descr, shape, data, version=1):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    lenbytes = 2 if version == 1 else 4
    pad = (64 - (8 + lenbytes + len(header) + 1) % 64) % 64
    header = header + " " * pad + "\n"
    head = b"\x93NUMPY" + bytes([version, 0])
    head += struct.pack("<H" if version == 1 else "<I", len(header))
    return head + header.encode() + data


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def floats(n, rng, scale=0.5):
    return array.array("f", [rng.gauss(0, scale) for _ in range(n)])


def npy_seeds(rng):
    write("npy", "f4_3x4.npy", npy("<f4", [3, 4], floats(12, rng).tobytes()))
    write("npy", "f4_4.npy", npy("<f4", [4], floats(4, rng).tobytes()))
    write("npy", "f8_2x4.npy", npy("<f8", [2, 4], array.array("d", [0.5] * 8).tobytes()))
    write("npy", "u1_5x4.npy", npy("|u1", [5, 4], bytes(range(20))))
    write("npy", "i8_3.npy", npy("<i8", [3], array.array("q", [1, -2, 3]).tobytes()))
    write("npy", "u2_2x2_v2.npy", npy("<u2", [2, 2], array.array("H", [1, 2, 3, 4]).tobytes(), version=2))
    write("npy", "i4_scalar.npy", npy("<i4", [], array.array("i", [7]).tobytes()))
    write("npy", "f4_0x4.npy", npy("<f4", [0, 4], b""))


def idx(dims, payload, compress):
    data = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
    return gzip.compress(data, mtime=0) if compress else data


def idx_seeds(rng):
    for count, rows, cols, gz in [(3, 4, 5, False), (2, 28, 28, True), (4, 2, 2, True), (1, 1, 1, False)]:
        images = idx([count, rows, cols], bytes(rng.randrange(256) for _ in range(count * rows * cols)), gz)
        labels = idx([count], bytes(rng.randrange(10) for _ in range(count)), gz)
        write("idx", "set_%dx%dx%d%s" % (count, rows, cols, "_gz" if gz else ""),
              struct.pack("<I", len(images)) + images + labels)


def pack_run(files):
    out = b""
    for name, data in files:
        out += bytes([len(name)]) + name.encode() + struct.pack("<I", len(data)) + data
    return out


def run_dir(layers, tensors, shape):
    spec = {"format": "permdnn-run/1", "model": "seed",
            "input": {"shape": shape, "layout": "NCHW", "scale": 1 / 255, "mean": 0.286, "std": 0.353},
            "num_classes": 4, "layers": layers}
    return pack_run([("model.json", json.dumps(spec).encode())] + tensors)


def run_dir_seeds(rng):
    t = lambda layer, k: "tensors/%s.%s.npy" % (layer, k)
    # mlp 16 -> 8 -> 4: dense, then permdiag p = 4.
    for kind in ["dense", "permdiag", "circulant", "prune"]:
        files, fc1 = [], {"name": "fc1", "type": "linear", "in": 16, "out": 8}
        if kind == "dense":
            fc1["compress"] = {"kind": "dense"}
            fc1["tensors"] = {"weight": t("fc1", "weight"), "bias": t("fc1", "bias")}
            files.append((t("fc1", "weight"), npy("<f4", [8, 16], floats(128, rng).tobytes())))
        elif kind == "permdiag":
            fc1["compress"] = {"kind": "permdiag", "p": 4}
            fc1["tensors"] = {"values": t("fc1", "values"), "offsets": t("fc1", "offsets"), "bias": t("fc1", "bias")}
            files.append((t("fc1", "values"), npy("<f4", [2, 4, 4], floats(32, rng).tobytes())))
            files.append((t("fc1", "offsets"), npy("<u2", [2, 4], array.array("H", [rng.randrange(4) for _ in range(8)]).tobytes())))
        elif kind == "circulant":
            fc1["compress"] = {"kind": "circulant", "p": 4}
            fc1["tensors"] = {"values": t("fc1", "values"), "bias": t("fc1", "bias")}
            files.append((t("fc1", "values"), npy("<f4", [2, 4, 4], floats(32, rng).tobytes())))
        else:
            fc1["compress"] = {"kind": "prune", "density": 0.125, "bits": 2}
            fc1["tensors"] = {"row_ptr": t("fc1", "row_ptr"), "col_idx": t("fc1", "col_idx"),
                              "codes": t("fc1", "codes"), "codebook": t("fc1", "codebook"), "bias": t("fc1", "bias")}
            row_ptr = array.array("i", [2 * r for r in range(9)])
            col_idx = array.array("i", [c for r in range(8) for c in (r, r + 8)])
            files.append((t("fc1", "row_ptr"), npy("<i4", [9], row_ptr.tobytes())))
            files.append((t("fc1", "col_idx"), npy("<i4", [16], col_idx.tobytes())))
            files.append((t("fc1", "codes"), npy("|u1", [16], bytes(rng.randrange(4) for _ in range(16)))))
            files.append((t("fc1", "codebook"), npy("<f4", [4], floats(4, rng).tobytes())))
        files.append((t("fc1", "bias"), npy("<f4", [8], floats(8, rng).tobytes())))
        fc2 = {"name": "fc2", "type": "linear", "in": 8, "out": 4, "compress": {"kind": "dense"},
               "tensors": {"weight": t("fc2", "weight"), "bias": t("fc2", "bias")}}
        files.append((t("fc2", "weight"), npy("<f4", [4, 8], floats(32, rng).tobytes())))
        files.append((t("fc2", "bias"), npy("<f4", [4], floats(4, rng).tobytes())))
        layers = [{"name": "flatten", "type": "flatten"}, fc1, {"name": "relu1", "type": "relu"},
                  {"name": "drop", "type": "dropout"}, fc2]
        write("run_dir", "mlp_" + kind, run_dir(layers, files, [1, 4, 4]))
    # conv (permdiag p = 2) -> batchnorm -> relu -> maxpool -> avgpool -> flatten -> fc
    files = []
    conv = {"name": "conv1", "type": "conv2d", "in": 2, "out": 4, "kernel": [3, 3], "stride": [1, 1],
            "padding": [1, 1], "compress": {"kind": "permdiag", "p": 2},
            "tensors": {"values": t("conv1", "values"), "offsets": t("conv1", "offsets"), "bias": t("conv1", "bias")}}
    files.append((t("conv1", "values"), npy("<f4", [2, 1, 2, 3, 3], floats(36, rng).tobytes())))
    files.append((t("conv1", "offsets"), npy("<u2", [2, 1], array.array("H", [0, 1]).tobytes())))
    files.append((t("conv1", "bias"), npy("<f4", [4], floats(4, rng).tobytes())))
    bn = {"name": "bn1", "type": "batchnorm2d", "channels": 4, "eps": 1e-5,
          "tensors": {k: t("bn1", k) for k in ["weight", "bias", "running_mean", "running_var"]}}
    for k in ["weight", "bias", "running_mean"]:
        files.append((t("bn1", k), npy("<f4", [4], floats(4, rng).tobytes())))
    files.append((t("bn1", "running_var"), npy("<f4", [4], array.array("f", [1.0] * 4).tobytes())))
    fc = {"name": "fc", "type": "linear", "in": 4, "out": 3, "compress": {"kind": "dense"},
          "tensors": {"weight": t("fc", "weight")}}
    files.append((t("fc", "weight"), npy("<f4", [3, 4], floats(12, rng).tobytes())))
    layers = [conv, bn, {"name": "relu", "type": "relu"},
              {"name": "pool", "type": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]},
              {"name": "gap", "type": "avgpool2d", "kernel": 3},
              {"name": "flatten", "type": "flatten"}, fc]
    write("run_dir", "cnn_permdiag", run_dir(layers, files, [2, 6, 6]))


def recurrent_run_seeds(rng):
    """Sequence models (docs/run-format.md, "Recurrent models"): an lstm
    classifier (T = 4 rows of 4) with rnn1 in every compression kind, a
    bidirectional gru, and a charlm-style embedding -> gru -> per-step fc."""
    t = lambda layer, k: "tensors/%s.%s.npy" % (layer, k)
    hidden, n_in = 4, 4

    def matrix(files, key, rows, cols, kind):
        # One of W_ih / W_hh as a linear layer's arrays, prefixed with key.
        if kind == "dense":
            files.append((t("rnn1", key + ".weight"), npy("<f4", [rows, cols], floats(rows * cols, rng).tobytes())))
        elif kind in ("permdiag", "circulant"):
            files.append((t("rnn1", key + ".values"), npy("<f4", [rows // 2, cols // 2, 2],
                                                          floats(rows * cols // 2, rng).tobytes())))
            if kind == "permdiag":
                offs = [rng.randrange(2) for _ in range(rows * cols // 4)]
                files.append((t("rnn1", key + ".offsets"), npy("<u2", [rows // 2, cols // 2],
                                                               array.array("H", offs).tobytes())))
        else:  # prune with a 2-bit codebook: two nonzeros per row
            row_ptr = array.array("i", [2 * r for r in range(rows + 1)])
            col_idx = array.array("i", [c for r in range(rows) for c in sorted({r % cols, (r + 1) % cols})])
            files.append((t("rnn1", key + ".row_ptr"), npy("<i4", [rows + 1], row_ptr.tobytes())))
            files.append((t("rnn1", key + ".col_idx"), npy("<i4", [len(col_idx)], col_idx.tobytes())))
            files.append((t("rnn1", key + ".codes"), npy("|u1", [len(col_idx)],
                                                         bytes(rng.randrange(4) for _ in col_idx))))
            files.append((t("rnn1", key + ".codebook"), npy("<f4", [4], floats(4, rng).tobytes())))

    def rnn_layer(files, cell, kind, bidirectional=False, output="last", n=n_in):
        gates = {"lstm": 4, "gru": 3}[cell]
        compress = {"kind": kind}
        if kind in ("permdiag", "circulant"):
            compress["p"] = 2
        elif kind == "prune":
            compress.update({"density": 0.5, "bits": 2})
        layer = {"name": "rnn1", "type": cell, "in": n, "hidden": hidden, "bidirectional": bidirectional,
                 "output": output, "compress": compress}
        before = len(files)
        for suffix in ([""] + (["_reverse"] if bidirectional else [])):
            matrix(files, "ih" + suffix, gates * hidden, n, kind)
            matrix(files, "hh" + suffix, gates * hidden, hidden, kind)
            for b in ("bias_ih", "bias_hh"):
                files.append((t("rnn1", b + suffix), npy("<f4", [gates * hidden],
                                                         floats(gates * hidden, rng).tobytes())))
        layer["tensors"] = {name[len("tensors/rnn1."):-len(".npy")]: name for name, _ in files[before:]}
        return layer

    def fc_layer(files, n, out):
        files.append((t("fc", "weight"), npy("<f4", [out, n], floats(out * n, rng).tobytes())))
        files.append((t("fc", "bias"), npy("<f4", [out], floats(out, rng).tobytes())))
        return {"name": "fc", "type": "linear", "in": n, "out": out, "compress": {"kind": "dense"},
                "tensors": {"weight": t("fc", "weight"), "bias": t("fc", "bias")}}

    rows_input = {"shape": [4, 4], "layout": "TF", "scale": 1 / 255, "mean": 0.286, "std": 0.353}
    cases = [("lstm", k, False) for k in ("dense", "permdiag", "circulant", "prune")] + [("gru", "permdiag", True)]
    for cell, kind, bidir in cases:
        files = []
        layers = [rnn_layer(files, cell, kind, bidir)]
        layers.append(fc_layer(files, hidden * (2 if bidir else 1), 3))
        spec = {"format": "permdnn-run/1", "model": "lstm", "input": rows_input, "num_classes": 3, "layers": layers}
        name = "%s_%s%s" % (cell, kind, "_bidir" if bidir else "")
        write("run_dir", name, pack_run([("model.json", json.dumps(spec).encode())] + files))
    # charlm: ids [B, 5] -> embed (vocab 6, dim 4) -> gru (sequence) -> fc per step.
    files = [(t("embed", "weight"), npy("<f4", [6, 4], floats(24, rng).tobytes()))]
    layers = [{"name": "embed", "type": "embedding", "vocab": 6, "dim": 4,
               "tensors": {"weight": t("embed", "weight")}},
              rnn_layer(files, "gru", "permdiag", output="sequence")]
    layers.append(fc_layer(files, hidden, 6))
    spec = {"format": "permdnn-run/1", "model": "charlm", "num_classes": 6, "layers": layers,
            "input": {"shape": [5], "layout": "T", "dtype": "int64", "vocab": 6, "alphabet": [10, 32, 97, 98, 99, 100]}}
    write("run_dir", "charlm_gru_permdiag", pack_run([("model.json", json.dumps(spec).encode())] + files))


def ternary_run_seeds(rng):
    """PE-wise ternary layers (docs/run-format.md, ternary g): a linear 8 -> 4
    with groups of 4 inputs, and a conv 4 -> 2 (3x3) with groups of 2 channels;
    one group of each pruned."""
    t = lambda layer, k: "tensors/%s.%s.npy" % (layer, k)

    def ternary(files, name, out, groups, group_len, kept_mask):
        kept = sum(kept_mask)
        mask_bytes = bytearray((out * groups + 7) // 8)
        for i, bit in enumerate(kept_mask):
            if bit:
                mask_bytes[i // 8] |= 1 << (i % 8)
        plane = (group_len + 7) // 8
        plus, minus = bytearray(kept * plane), bytearray(kept * plane)
        for g in range(kept):
            for e in range(group_len):
                v = rng.randrange(3)
                if v:
                    (plus if v == 1 else minus)[g * plane + e // 8] |= 1 << (e % 8)
        files.append((t(name, "group_mask"), npy("|u1", [len(mask_bytes)], bytes(mask_bytes))))
        files.append((t(name, "plus"), npy("|u1", [kept, plane], bytes(plus))))
        files.append((t(name, "minus"), npy("|u1", [kept, plane], bytes(minus))))
        files.append((t(name, "scale"), npy("<f4", [out], array.array("f", [0.5] * out).tobytes())))
        files.append((t(name, "bias"), npy("<f4", [out], floats(out, rng).tobytes())))
        return {k: t(name, k) for k in ("group_mask", "plus", "minus", "scale", "bias")}

    files = []
    fc1 = {"name": "fc1", "type": "linear", "in": 8, "out": 4, "compress": {"kind": "ternary", "group": 4, "density": 0.75},
           "tensors": ternary(files, "fc1", 4, 2, 4, [1, 1, 0, 1, 1, 1, 1, 0])}
    fc2 = {"name": "fc2", "type": "linear", "in": 4, "out": 3, "compress": {"kind": "dense"},
           "tensors": {"weight": t("fc2", "weight")}}
    files.append((t("fc2", "weight"), npy("<f4", [3, 4], floats(12, rng).tobytes())))
    layers = [{"name": "flatten", "type": "flatten"}, fc1, {"name": "relu1", "type": "relu"}, fc2]
    write("run_dir", "mlp_ternary", run_dir(layers, files, [1, 2, 4]))
    files = []
    conv = {"name": "conv1", "type": "conv2d", "in": 4, "out": 2, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
            "compress": {"kind": "ternary", "group": 2, "density": 0.75},
            "tensors": ternary(files, "conv1", 2, 2, 2 * 9, [1, 0, 1, 1])}
    fc = {"name": "fc", "type": "linear", "in": 2, "out": 3, "compress": {"kind": "dense"},
          "tensors": {"weight": t("fc", "weight")}}
    files.append((t("fc", "weight"), npy("<f4", [3, 2], floats(6, rng).tobytes())))
    layers = [conv, {"name": "relu", "type": "relu"}, {"name": "gap", "type": "avgpool2d", "kernel": 4},
              {"name": "flatten", "type": "flatten"}, fc]
    write("run_dir", "cnn_ternary", run_dir(layers, files, [4, 4, 4]))


def train_from_seeds(rng):
    # The "tiny" model at input 1x4x4, 4 classes: fc1 16->64, fc2 64->32, fc3 32->4, all dense.
    t = lambda layer, k: "tensors/%s.%s.npy" % (layer, k)
    layers, files = [{"name": "flatten", "type": "flatten"}], []
    for i, (n_in, n_out) in enumerate([(16, 64), (64, 32), (32, 4)]):
        name = "fc%d" % (i + 1)
        layers.append({"name": name, "type": "linear", "in": n_in, "out": n_out, "compress": {"kind": "dense"},
                       "tensors": {"weight": t(name, "weight"), "bias": t(name, "bias")}})
        if i < 2:
            layers.append({"name": "relu%d" % (i + 1), "type": "relu"})
        files.append((t(name, "weight"), npy("<f4", [n_out, n_in], floats(n_out * n_in, rng, 0.2).tobytes())))
        files.append((t(name, "bias"), npy("<f4", [n_out], floats(n_out, rng, 0.01).tobytes())))
    spec = {"format": "permdnn-run/1", "model": "tiny", "input": {"shape": [1, 4, 4]}, "num_classes": 4,
            "layers": layers}
    write("train_from", "tiny_dense", pack_run([("model.json", json.dumps(spec).encode())] + files))
    spec["model"] = "mlp"
    write("train_from", "wrong_model", pack_run([("model.json", json.dumps(spec).encode())]))
    # --resume's history: metrics.json as the trainer writes it (two epochs).
    metrics = [{"epoch": e, "lr": 0.001, "train_loss": 0.5 / e, "train_accuracy": 0.8, "test_loss": 0.6 / e,
                "test_accuracy": 0.75, "seconds": 1.5, "best": e == 2} for e in (1, 2)]
    write("train_from", "metrics", pack_run([("metrics.json", json.dumps(metrics, indent=2).encode())]))
    # --resume's checkpoint container: a small zip laid out as LibTorch writes one (stored + deflated entries).
    buf = io.BytesIO()
    entries = [("archive/data.pkl", bytes(range(64)) * 4, zipfile.ZIP_STORED),
               ("archive/code/__torch__.py", b"class Module:\n  pass\n" * 8, zipfile.ZIP_DEFLATED),
               ("archive/data/0", floats(16, rng, 0.5).tobytes(), zipfile.ZIP_STORED)]
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, method in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # deterministic
            info.compress_type = method
            z.writestr(info, data)
    write("train_from", "checkpoint", pack_run([("checkpoint_last.pt", buf.getvalue())]))


def text_seeds():
    # Corpus files as `train --model charlm --data FILE` reads them (bytes).
    write("text", "fortune", b"Q:\tWhat is a compressed network?\nA:\tOne whose weights fit in cache.\n%\n"
          b"He who hesitates is sometimes saved.\n\t\t-- James Thurber\n%\n")
    write("text", "one_byte", b"x")
    write("text", "utf8", "na\u00efve caf\u00e9 \u2014 \u00fcber\n".encode())
    write("text", "nul_at_end", b"almost text\n\x00")


def sim_seeds():
    with open(os.path.join(ROOT, "data", "sim", "example_config.toml"), "rb") as f:
        toml = f.read()
    write("sim_config", "example.toml", toml if len(toml) % 2 == 0 else toml + b"\n")
    small = b"[permdnn]\nnum_pe = 4\nmults_per_pe = 2\n\n[eie]\nnum_pe = 4\n\n[circnn]\nnum_pe = 4\n\n[workload]\np = 4\n"
    write("sim_config", "small.toml", small if len(small) % 2 == 0 else small + b"#")
    js = json.dumps({"permdnn": {"num_pe": 8, "bits": 8}, "eie": {"frequency_scaling": "linear"},
                     "workload": {"seed": 2, "act_density": 0.5}}).encode()
    write("sim_config", "small.json", js if len(js) % 2 == 1 else js + b" ")
    with open(os.path.join(ROOT, "data", "sim", "tech_28nm.json"), "rb") as f:
        write("sim_tech", "tech_28nm.json", f.read())


def main():
    rng = random.Random(20)
    npy_seeds(rng)
    idx_seeds(rng)
    run_dir_seeds(rng)
    train_from_seeds(rng)
    recurrent_run_seeds(random.Random(21))
    ternary_run_seeds(random.Random(22))
    sim_seeds()
    text_seeds()


if __name__ == "__main__":
    main()
