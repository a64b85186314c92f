#!/usr/bin/env python3
"""permdnn's runtime next to ONNX Runtime on the same model files and inputs.

    scripts/bench-runtime.py [--zoo build/zoo | --model M.onnx --input-shape 3,224,224 [--ort-model D.onnx]]
        [--only resnet18,resnet18-p4] [--batch 1,16] [--threads 1,2] [--rounds 3] [--min-time 0.5]
        [--simd-target avx2] [--json OUT.json] [--markdown OUT.md]

For every model of the zoo manifest (scripts/make-zoo.sh) and batch size it
writes one random input (.npy, seeded), then for R rounds alternates, per
thread count, ONNX Runtime (scripts/ort_bench.js: CPU provider, all graph
optimizations, intra-op threads = T) and `permdnn run --bench --input` (T
threads) on that input, in alternating order, so both see the same machine
load. Each engine's time is the median over rounds of its per-round median.
A compressed model (ai.permdnn operators) is run by ONNX Runtime as its
`--portable` twin (dense Conv/Gemm of the same projected weights): that run
checks the outputs, and the speedup of the compressed model is quoted
against ONNX Runtime on the dense model it came from.

--simd-target T runs permdnn as a CPU whose best SIMD target is T would
(`permdnn run --simd-target`: its kernels, oneDNN and OpenBLAS on T's
vectors), e.g. AVX2 on an AVX-512 machine. ONNX Runtime has no such switch
(MLAS picks its kernels from the CPU's features): it keeps this CPU's, so
such a run sets permdnn on T against ONNX Runtime on this CPU's best
kernels, not the ones a CPU whose best is T would run.

Agreement: max |permdnn - ORT| <= rtol * max |ORT| + atol elementwise over
the output (defaults rtol 1e-3, atol 1e-5); a mismatch is reported and makes
the exit status 1. Stdlib only (any python3); needs node and
onnxruntime-node (scripts/install-ort.sh) and a permdnn build.
"""
import argparse
import array
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time

from machine import cpu_name, permdnn_simd_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_npy(path, shape, data):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % (
        ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))
        if sys.byteorder != "little":
            data = array.array("f", data)
            data.byteswap()
        f.write(data.tobytes())
    os.replace(tmp, path)


def read_npy(path):
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    major = buf[6]
    hlen = int.from_bytes(buf[8:10], "little") if major == 1 else int.from_bytes(buf[8:12], "little")
    start = (10 if major == 1 else 12) + hlen
    header = buf[(10 if major == 1 else 12):start].decode("latin1")
    if "'<f4'" not in header:
        raise ValueError(f"{path}: expected float32 little-endian, header {header.strip()}")
    shape = [int(d) for d in re.search(r"'shape':\s*\(([^)]*)\)", header).group(1).split(",") if d.strip()]
    data = array.array("f")
    data.frombytes(buf[start:])
    if sys.byteorder != "little":
        data.byteswap()
    return shape, data


def compare(got, want, rtol, atol):
    scale = max((abs(v) for v in want), default=0.0)
    worst, at = 0.0, -1
    for i, (a, b) in enumerate(zip(got, want)):
        d = abs(a - b)
        if d > worst:
            worst, at = d, i
    ok = len(got) == len(want) and worst <= rtol * scale + atol
    return {"max_abs_diff": worst, "max_abs_ref": scale, "rel_diff": worst / scale if scale else worst,
            "first_worst_index": at, "agree": ok}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def run(cmd, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout


def parse_list(text, flag):
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sys.exit(f"bench-runtime: {flag}: '{text}' is not a list of integers")
    if not vals or min(vals) < 1:
        sys.exit(f"bench-runtime: {flag}: '{text}' must list positive integers")
    return vals


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=os.path.join(ROOT, "build/zoo"))
    ap.add_argument("--model", help="one model file instead of the zoo")
    ap.add_argument("--ort-model", help="the file ONNX Runtime runs for --model (default: the same file)")
    ap.add_argument("--input-shape", help="per-sample input shape for --model, e.g. 3,224,224")
    ap.add_argument("--only", help="comma-separated zoo names to run")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--permdnn", default=os.path.join(ROOT, os.environ.get("BUILD_DIR", "build/release"), "src/permdnn"))
    ap.add_argument("--ort-dir", default=os.path.join(ROOT, "build/ort"))
    ap.add_argument("--work", default=None, help="inputs and outputs (default ZOO/work)")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simd-target", help="run permdnn under this SIMD target (e.g. avx2; ONNX Runtime keeps its own)")
    a = ap.parse_args()
    batches, threads = parse_list(a.batch, "--batch"), parse_list(a.threads, "--threads")
    if a.rounds < 1:
        sys.exit("bench-runtime: --rounds must be >= 1")

    if a.model:
        if not a.input_shape:
            sys.exit("bench-runtime: --model needs --input-shape (per sample, without the batch)")
        name = os.path.splitext(os.path.basename(a.model))[0]
        models = [{"name": name, "base": name, "variant": "model", "path": a.model,
                   "ort_path": a.ort_model or a.model, "input_shape": parse_list(a.input_shape, "--input-shape")}]
    else:
        manifest = os.path.join(a.zoo, "zoo.json")
        if not os.path.exists(manifest):
            sys.exit(f"bench-runtime: {manifest} is missing: run scripts/make-zoo.sh first")
        with open(manifest) as f:
            models = json.load(f)["models"]
        for m in models:
            m["path"] = os.path.join(a.zoo, m["file"])
            m["ort_path"] = os.path.join(a.zoo, m["ort_file"])
        if a.only:
            want = set(a.only.split(","))
            unknown = want - {m["name"] for m in models}
            if unknown:
                sys.exit(f"bench-runtime: --only: unknown models {sorted(unknown)} (zoo: {[m['name'] for m in models]})")
            models = [m for m in models if m["name"] in want]
    for m in models:
        for key in ("path", "ort_path"):
            if not os.path.exists(m[key]):
                sys.exit(f"bench-runtime: {m['name']}: {m[key]} is missing")
    for tool in (a.permdnn,):
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench-runtime: {tool} is not an executable permdnn (build first)")
    driver = os.path.join(ROOT, "scripts/ort_bench.js")
    work = a.work or os.path.join(a.zoo if not a.model else os.path.dirname(os.path.abspath(a.model)), "work")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    ort_version = None
    permdnn_simd = None  # what `permdnn run --simd-target` reported
    records = []
    failures = 0
    for m in models:
        for b in batches:
            shape = [b] + list(m["input_shape"])
            rng = random.Random(a.seed * 1000003 + b)
            n = 1
            for d in shape:
                n *= d
            x = array.array("f", (rng.gauss(0.0, 1.0) for _ in range(n)))
            xin = os.path.join(work, f"input-{'x'.join(map(str, m['input_shape']))}-b{b}.npy")
            if not os.path.exists(xin):
                write_npy(xin, shape, x)
            tag = f"{m['name']}-b{b}"
            times, walls, how = {}, {}, {}
            for r in range(a.rounds):
                for t in threads:
                    order = ["ort", "permdnn"] if (r + t) % 2 == 0 else ["permdnn", "ort"]
                    for eng in order:
                        out = os.path.join(work, f"{tag}-{eng}.npy") if r == 0 and t == threads[0] else None
                        js = os.path.join(work, f"{tag}-{eng}-t{t}.json")
                        if eng == "ort":
                            cmd = ["node", driver, "--model", m["ort_path"], "--input", xin, "--threads", str(t),
                                   "--min-time", str(a.min_time), "--json", js, "--ort-dir", a.ort_dir]
                            if t == 1:
                                cmd.append("--cpu-time")
                            if out:
                                cmd += ["--output", out]
                            run(cmd, env)
                            with open(js) as f:
                                rec = json.load(f)
                            ort_version = rec["version"]
                            ms, wall_ms = rec["median_ms"], rec["wall_median_ms"]
                        else:
                            cmd = [a.permdnn, "run", m["path"], "--bench", "--input", xin, "--threads", str(t),
                                   "--min-time", str(a.min_time), "--json", js]
                            if t == 1:
                                cmd.append("--cpu-time")
                            if out:
                                cmd += ["--output", out]
                            if a.simd_target:
                                cmd += ["--simd-target", a.simd_target]
                            run(cmd, env)
                            with open(js) as f:
                                rec = json.load(f)[0]
                            if a.simd_target:
                                permdnn_simd = (rec["simd_target"], rec["onednn_isa"], rec["openblas_core"])
                            ms, wall_ms = rec["median_s"] * 1e3, rec["wall_median_s"] * 1e3
                            how[t] = (rec.get("batch_workers", 1), rec.get("samples_per_pass", b),
                                      rec.get("run_threads", t))
                        times.setdefault((eng, t), []).append(ms)
                        walls.setdefault((eng, t), []).append(wall_ms)
            _, got = read_npy(os.path.join(work, f"{tag}-permdnn.npy"))
            _, want = read_npy(os.path.join(work, f"{tag}-ort.npy"))
            agree = compare(got, want, a.rtol, a.atol)
            if not agree["agree"]:
                failures += 1
            for t in threads:
                rec = {"model": m["name"], "base": m["base"], "variant": m["variant"], "file": m["path"],
                       "ort_file": m["ort_path"], "batch": b, "threads": t,
                       "permdnn_ms": statistics.median(times[("permdnn", t)]),
                       "ort_ms": statistics.median(times[("ort", t)]),
                       "permdnn_wall_ms": statistics.median(walls[("permdnn", t)]),
                       "ort_wall_ms": statistics.median(walls[("ort", t)]), "timer": "cpu" if t == 1 else "wall",
                       "permdnn_batch_workers": how.get(t, (1, b, t))[0],
                       "permdnn_samples_per_pass": how.get(t, (1, b, t))[1],
                       "permdnn_run_threads": how.get(t, (1, b, t))[2],
                       "permdnn_rounds_ms": times[("permdnn", t)], "ort_rounds_ms": times[("ort", t)], **agree}
                records.append(rec)
                print(f"{m['name']:<22} B={b:<3} T={t}  permdnn {rec['permdnn_ms']:9.3f} ms  ORT {rec['ort_ms']:9.3f} ms  "
                      f"ratio {rec['permdnn_ms'] / rec['ort_ms']:5.2f}  max|diff| {agree['max_abs_diff']:.2e} "
                      f"(ref {agree['max_abs_ref']:.2e}) {'ok' if agree['agree'] else 'MISMATCH'}", flush=True)
    # Speedups of each model against ONNX Runtime on the dense model it came from.
    dense_ort = {(r["base"], r["batch"], r["threads"]): r["ort_ms"] for r in records if r["variant"] in ("dense", "model")}
    for r in records:
        r["ort_dense_ms"] = dense_ort.get((r["base"], r["batch"], r["threads"]))
        r["speedup_vs_ort_dense"] = r["ort_dense_ms"] / r["permdnn_ms"] if r["ort_dense_ms"] else None
    flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "baseline"
    if permdnn_simd:
        simd = (f"{isa}; permdnn run --simd-target {a.simd_target}: its kernels on Highway target {permdnn_simd[0]}, "
                f"oneDNN ISA {permdnn_simd[1]}, OpenBLAS core {permdnn_simd[2]}; ONNX Runtime on its own kernels for "
                f"this CPU ({isa}: it has no switch to cap them)")
    else:
        simd = f"{isa}, permdnn's kernels on Highway target {permdnn_simd_target(a.permdnn, env)}"
    meta = {"cpu": cpu_name(), "cores": os.cpu_count(), "simd": simd, "onnxruntime": ort_version,
            "rounds": a.rounds, "min_time_s": a.min_time, "rtol": a.rtol, "atol": a.atol,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg": os.getloadavg()[0],
            "permdnn_simd_target": permdnn_simd[0] if permdnn_simd else None, "cpu_isa": isa,
            "command": " ".join(["scripts/bench-runtime.py"] + sys.argv[1:])}
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
        os.replace(tmp, a.json)
    targets = evaluate_targets(records, meta)
    meta["targets_met"] = sum(1 for t in targets if t[4])
    meta["targets"] = len(targets)
    md = markdown(meta, records, batches, threads)
    if a.markdown:
        tmp = a.markdown + ".tmp"
        with open(tmp, "w") as f:
            f.write(md)
        os.replace(tmp, a.markdown)
    else:
        print(md)
    if failures:
        print(f"bench-runtime: {failures} model/batch pairs whose outputs disagree", file=sys.stderr)
        return 1
    return 0


def evaluate_targets(records, meta):
    """Issue 14's targets on whatever of the zoo was run: (model, what, measured, goal, met).
    Under --simd-target the engines' names carry their targets."""
    out = []
    pd, ort = "permdnn", "ORT"
    if meta.get("permdnn_simd_target"):  # the engines' targets differ
        pd, ort = f"permdnn ({meta['permdnn_simd_target']})", f"ORT ({meta['cpu_isa']})"
    get = {(r["model"], r["batch"], r["threads"]): r for r in records}
    for r in records:
        if r["threads"] != 1:
            continue
        name, b = r["model"], r["batch"]
        if r["variant"] == "dense":
            goal = 1.0 if r["base"] == "resnet18" else 1.2
            ratio = r["permdnn_ms"] / r["ort_ms"]
            out.append((name, f"{pd} / {ort} time, B={b}, 1 thread (at most)", ratio, goal, ratio <= goal))
            two = get.get((name, b, 2))
            if two and b >= 16:
                sp = r["permdnn_wall_ms"] / two["permdnn_wall_ms"]
                out.append((name, f"2 threads vs 1, B={b} (wall)", sp, 1.6, sp >= 1.6))
        else:
            goal = {("resnet18", "permdiag:p=4"): 2.0, ("resnet18", "permdiag:p=8"): 3.0,
                    ("fmnist-cnn", "permdiag:p=8"): 2.0}.get((r["base"], r["variant"]))
            if goal and r["speedup_vs_ort_dense"]:
                sp = r["speedup_vs_ort_dense"]
                out.append((name, f"vs {ort} on the dense model, B={b}, 1 thread", sp, goal, sp >= goal))
    return out


def markdown(meta, records, batches, threads):
    L = []
    L.append(f"Generated by `{meta['command']}` (`make bench`).\n")
    L.append(f"- CPU: {meta['cpu']} ({meta['cores']} hardware threads), SIMD: {meta['simd']}; "
             f"ONNX Runtime {meta['onnxruntime']} (onnxruntime-node, CPU provider, all graph optimizations)")
    L.append(f"- {meta['date_utc']}, load average {meta['loadavg']:.1f} at the end; each time is the median over "
             f"{meta['rounds']} rounds of per-round medians ({meta['min_time_s']} s of runs per round), "
             "permdnn and ONNX Runtime alternating on the same input file; 1-thread rows by process CPU time, "
             "2-thread rows by the wall clock")
    L.append(f"- targets met: {meta['targets_met']} of {meta['targets']}")
    L.append(f"- outputs agree when max|permdnn − ORT| ≤ {meta['rtol']:g}·max|ORT| + {meta['atol']:g} "
             "(compressed models: ORT runs the `--portable` twin with the same projected weights)")
    if meta.get("permdnn_simd_target"):
        L.append(f"- permdnn ran on {meta['permdnn_simd_target']} and ONNX Runtime on {meta['cpu_isa']}: every "
                 f"ratio against ONNX Runtime sets permdnn against ONNX Runtime's {meta['cpu_isa']} kernels, not the "
                 f"ones a CPU whose best is {meta['permdnn_simd_target']} would run")
    L.append("")
    targets = evaluate_targets(records, meta)
    if targets:
        L.append("#### Targets (issue 14)\n")
        L.append("| model | target | measured | goal | |")
        L.append("|---|---|---:|---:|---|")
        for name, what, got, goal, ok in targets:
            L.append(f"| {name} | {what} | {got:.2f}x | {goal:.2f}x | {'met' if ok else '**missed**'} |")
        L.append("")
    for t in threads:
        L.append(f"#### {t} thread{'s' if t > 1 else ''}\n")
        head = "| model | " + " | ".join(f"permdnn B={b} ms | ORT B={b} ms | vs ORT dense B={b}" for b in batches) + " | outputs |"
        L.append(head)
        L.append("|---|" + "---:|---:|---:|" * len(batches) + "---|")
        names = []
        for r in records:
            if r["threads"] == t and r["model"] not in names:
                names.append(r["model"])
        for name in names:
            cells, ok = [], True
            for b in batches:
                r = next((r for r in records if r["model"] == name and r["batch"] == b and r["threads"] == t), None)
                if r is None:
                    cells += ["", "", ""]
                    continue
                ok = ok and r["agree"]
                sp = r["speedup_vs_ort_dense"]
                workers, per_pass = r.get("permdnn_batch_workers", 1), r.get("permdnn_samples_per_pass", b)
                parts = [f"{workers} shares"] if workers > 1 else []
                if workers == 1 and t > 1 and r.get("permdnn_run_threads", t) == 1:
                    parts.append("on 1 thread")
                if per_pass * workers < b:
                    parts.append(f"passes of {per_pass}")
                how_run = f" ({', '.join(parts)})" if parts else ""
                cells += [f"{r['permdnn_ms']:.3f}{how_run}", f"{r['ort_ms']:.3f}", f"{sp:.2f}x" if sp else ""]
            worst = max(r["rel_diff"] for r in records if r["model"] == name and r["threads"] == t)
            L.append(f"| {name} | " + " | ".join(cells) + f" | {'agree' if ok else '**differ**'} ({worst:.1e}) |")
        L.append("")
    L.append("\"vs ORT dense\" is ONNX Runtime's time on the dense model divided by permdnn's time on this one "
             "(> 1: permdnn faster); \"ORT\" is ONNX Runtime on this file (compressed: its portable twin). The "
             "outputs column gives max|diff| / max|ORT|. In permdnn's column, \"k shares\": the batch ran as one share of "
             "the samples per thread, each on its own single-threaded copy of the model (batch parallelism); "
             "\"passes of m\": each share ran in passes of m samples (micro-batching; docs/runtime.md); \"on 1 thread\": "
             "the split check timed this shape faster on one thread than split over the threads, and ran it there "
             "(docs/runtime.md).")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
