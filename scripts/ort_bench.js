#!/usr/bin/env node
// ONNX Runtime side of the runtime benchmark (scripts/bench-runtime.py):
// loads one model in onnxruntime-node (CPU execution provider, all graph
// optimizations, intra-op threads as given, one inter-op thread), runs it on
// the input in a .npy file, writes the output (.npy) and times repeated runs
// of the same input (median and minimum after warm-up calls).
//
//   node scripts/ort_bench.js --model M.onnx --input X.npy [--output Y.npy]
//        [--threads 1] [--min-time 0.5] [--min-runs 5] [--warmup 3]
//        [--json OUT.json] [--ort-dir build/ort] [--cpu-time] [--parse-only]
//
// --cpu-time ranks runs by the process's CPU time (user + system, all
// threads: meant for --threads 1, where it keeps time slices lost to other
// processes out); the wall-clock median is reported as well.
// onnxruntime-node is looked up in --ort-dir/node_modules (installed there by
// scripts/install-ort.sh); ONNX Runtime is a benchmark dependency only.
// --parse-only prints the parsed arguments as JSON and exits without loading
// ONNX Runtime (the unit test of the argument parsing uses it). Errors name
// the flag or file and exit with status 2.
'use strict';

const fs = require('fs');
const path = require('path');

const kFlags = {
  '--model': 'string', '--input': 'string', '--output': 'string', '--json': 'string', '--ort-dir': 'string',
  '--threads': 'int', '--min-runs': 'int', '--warmup': 'int', '--min-time': 'float', '--parse-only': 'flag',
  '--cpu-time': 'flag',
};

class UsageError extends Error {}

// argv without "node script": returns the options or throws UsageError.
function parseArgs(argv) {
  const o = {
    model: '', input: '', output: '', json: '', ortDir: 'build/ort', threads: 1, minRuns: 5, warmup: 3,
    minTime: 0.5, parseOnly: false, cpuTime: false,
  };
  const key = (flag) => flag.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  for (let i = 0; i < argv.length; ++i) {
    let flag = argv[i], value;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) [flag, value] = [flag.slice(0, eq), flag.slice(eq + 1)];
    const kind = kFlags[flag];
    if (!kind) throw new UsageError(`unknown argument '${argv[i]}' (known: ${Object.keys(kFlags).join(' ')})`);
    if (kind === 'flag') {
      if (value !== undefined) throw new UsageError(`${flag} takes no value`);
      o[key(flag)] = true;
      continue;
    }
    if (value === undefined) {
      // A known flag where the value should be is a missing value, not the value.
      if (i + 1 >= argv.length || kFlags[argv[i + 1].split('=')[0]]) throw new UsageError(`${flag} needs a value`);
      value = argv[++i];
    }
    if (kind === 'string') {
      o[key(flag)] = value;
    } else {
      const v = Number(value);
      const ok = value.trim() !== '' && Number.isFinite(v) && (kind === 'float' || Number.isInteger(v));
      if (!ok) throw new UsageError(`${flag}: '${value}' is not ${kind === 'int' ? 'an integer' : 'a number'}`);
      o[key(flag)] = v;
    }
  }
  if (!o.model) throw new UsageError('--model is required');
  if (!o.input) throw new UsageError('--input is required');
  if (o.threads < 1) throw new UsageError(`--threads must be >= 1, got ${o.threads}`);
  if (o.minRuns < 1) throw new UsageError(`--min-runs must be >= 1, got ${o.minRuns}`);
  if (o.warmup < 0) throw new UsageError(`--warmup must be >= 0, got ${o.warmup}`);
  if (o.minTime < 0) throw new UsageError(`--min-time must be >= 0, got ${o.minTime}`);
  return o;
}

// Little-endian float32, C order .npy (version 1 or 2 header).
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new UsageError(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, start);
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || descr[1] !== '<f4') throw new UsageError(`${file}: dtype ${descr ? descr[1] : '?'}, expected <f4`);
  if (/'fortran_order':\s*True/.test(header)) throw new UsageError(`${file}: Fortran order is not supported`);
  if (!shape) throw new UsageError(`${file}: no shape in the header`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  const n = dims.reduce((a, b) => a * b, 1);
  if (buf.length - start !== 4 * n) throw new UsageError(`${file}: ${buf.length - start} data bytes, shape needs ${4 * n}`);
  const data = new Float32Array(n);
  for (let i = 0; i < n; ++i) data[i] = buf.readFloatLE(start + 4 * i);
  return { dims, data };
}

function writeNpy(file, dims, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims.join(', ')}${dims.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const tmp = `${file}.tmp${process.pid}`;
  fs.writeFileSync(tmp, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
  fs.renameSync(tmp, file);
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`ort_bench: error: ${e.message}\n`);
    process.exit(2);
  }
  if (o.parseOnly) {
    process.stdout.write(JSON.stringify(o) + '\n');
    return;
  }
  const modDir = path.resolve(o.ortDir, 'node_modules', 'onnxruntime-node');
  if (!fs.existsSync(modDir)) {
    process.stderr.write(`ort_bench: error: onnxruntime-node not found in ${modDir} (run scripts/install-ort.sh)\n`);
    process.exit(2);
  }
  const ort = require(modDir);
  const x = readNpy(o.input);
  const session = await ort.InferenceSession.create(o.model, {
    executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: o.threads,
    interOpNumThreads: 1, executionMode: 'sequential',
  });
  if (session.inputNames.length !== 1) throw new Error(`${o.model}: ${session.inputNames.length} inputs, expected 1`);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.dims) };
  const outName = session.outputNames[0];
  let y = null;
  for (let i = 0; i < Math.max(1, o.warmup); ++i) y = (await session.run(feeds))[outName];
  const ms = [], wall = [];
  const t0 = process.hrtime.bigint();
  while (ms.length < o.minRuns || Number(process.hrtime.bigint() - t0) * 1e-9 < o.minTime) {
    const c = process.cpuUsage();
    const s = process.hrtime.bigint();
    await session.run(feeds);
    wall.push(Number(process.hrtime.bigint() - s) * 1e-6);
    const d = process.cpuUsage(c);
    ms.push(o.cpuTime ? (d.user + d.system) * 1e-3 : wall[wall.length - 1]);
    if (ms.length >= 100000) break;
  }
  if (o.output) writeNpy(o.output, y.dims, y.data);
  const rec = {
    engine: 'onnxruntime', version: ort.env.versions.common, model: o.model, batch: x.dims[0], threads: o.threads,
    median_ms: median(ms), min_ms: Math.min(...ms), wall_median_ms: median(wall), runs: ms.length,
    timer: o.cpuTime ? 'cpu' : 'wall', output_shape: y.dims,
  };
  if (o.json) {
    const tmp = `${o.json}.tmp${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n');
    fs.renameSync(tmp, o.json);
  }
  process.stdout.write(`${rec.engine} ${rec.version} threads ${rec.threads} batch ${rec.batch}: median ` +
                       `${rec.median_ms.toFixed(4)} ms, min ${rec.min_ms.toFixed(4)} ms (${rec.runs} runs)\n`);
}

module.exports = { parseArgs, UsageError };
if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`ort_bench: error: ${e.message}\n`);
    process.exit(2);
  });
}
