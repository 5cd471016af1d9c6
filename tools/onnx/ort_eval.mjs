// ort_eval.mjs: runs a gplq ONNX model in ONNX Runtime (onnxruntime-node, CPU) over the
// Fashion-MNIST test images and prints one JSON object: top-1, and, against a logits file that
// `gplq eval --logits` wrote for the same images, the max |logit difference| and how many
// predictions differ. Or, with --bench, ORT's latency and throughput at batch 1 and 64.
//
// The input normalization comes from the model's own metadata_props (mean, std), read from the
// file's protobuf here because onnxruntime-node does not expose custom metadata: so the test
// also proves a user can find it there.
//
//   node tools/onnx/ort_eval.mjs MODEL.onnx [--images N] [--batch B] [--threads T]
//        [--compare GPLQ.logits] [--logits-out FILE] [--bench] [--data DIR]
//        [--raw PIXELS --raw-labels LABELS --shape n,C,H,W] [--shape n,C,H,W (synthetic)]
//
// --data is a Fashion-MNIST folder (IDX, gzip); --raw gives any test set instead, as the worker
// does for a job's own data: PIXELS uint8 (n, C, H, W), LABELS int32 little-endian (n).
import fs from 'node:fs';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const a = { images: 0, batch: 100, threads: 2, compare: null, logitsOut: null, bench: false,
              data: '/usr/share/datasets/fashion-mnist', model: null, iters: 0 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => { if (i + 1 >= argv.length) throw new Error(`${k} needs a value`); return argv[++i]; };
    if (k === '--images') a.images = parseInt(v(), 10);
    else if (k === '--batch') a.batch = parseInt(v(), 10);
    else if (k === '--threads') a.threads = parseInt(v(), 10);
    else if (k === '--compare') a.compare = v();
    else if (k === '--logits-out') a.logitsOut = v();
    else if (k === '--data') a.data = v();
    else if (k === '--raw') a.raw = v();
    else if (k === '--raw-labels') a.rawLabels = v();
    else if (k === '--shape') a.shape = v().split(',').map((t) => parseInt(t, 10));
    else if (k === '--iters') a.iters = parseInt(v(), 10);
    else if (k === '--bench') a.bench = true;
    else if (!a.model && !k.startsWith('--')) a.model = k;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.model) throw new Error('usage: ort_eval.mjs MODEL.onnx [options]');
  return a;
}

// ---- metadata_props from the ModelProto wire format (field 14: StringStringEntryProto) ----
function readVarint(buf, pos) {
  let v = 0n, shift = 0n;
  for (;;) {
    const b = buf[pos++];
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [v, pos];
    shift += 7n;
  }
}

function fields(buf, start, end, fn) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Number(key >> 3n), wire = Number(key & 7n);
    if (wire === 0) { [, pos] = readVarint(buf, pos); }
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      fn(field, pos, pos + Number(len));
      pos += Number(len);
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
}

function modelMetadata(path) {
  const buf = fs.readFileSync(path);
  const meta = {};
  fields(buf, 0, buf.length, (field, s, e) => {
    if (field !== 14) return;
    let k = '', v = '';
    fields(buf, s, e, (f2, s2, e2) => {
      const str = buf.toString('utf8', s2, e2);
      if (f2 === 1) k = str; else if (f2 === 2) v = str;
    });
    meta[k] = v;
  });
  return meta;
}

// ---- Fashion-MNIST test set (IDX, gzip) ----
function readIdx(path) {
  const b = zlib.gunzipSync(fs.readFileSync(path));
  const ndim = b[3], dims = [];
  for (let i = 0; i < ndim; i++) dims.push(b.readUInt32BE(4 + 4 * i));
  return { dims, data: b.subarray(4 + 4 * ndim) };
}

function main() {
  const a = parseArgs(process.argv.slice(2));
  const meta = modelMetadata(a.model);
  if (!meta.mean || !meta.std) throw new Error(`${a.model}: no mean/std in metadata_props`);
  const mean = JSON.parse(meta.mean), std = JSON.parse(meta.std);
  let imgs, labels, nAll, H, W, C = mean.length;
  if (a.shape && !a.raw) {
    // synthetic pixels of a given shape (--bench on models without a dataset, e.g. DeiT-S)
    [nAll, C, H, W] = a.shape;
    const px = new Uint8Array(nAll * C * H * W);
    for (let i = 0; i < px.length; i++) px[i] = (i * 2654435761) >>> 24;
    imgs = { data: px };
    labels = new Int32Array(nAll);
  } else if (a.raw) {
    if (!a.rawLabels || !a.shape || a.shape.length !== 4) throw new Error('--raw needs --raw-labels and --shape n,C,H,W');
    [nAll, C, H, W] = a.shape;
    imgs = { data: fs.readFileSync(a.raw) };
    const lb = fs.readFileSync(a.rawLabels);
    labels = new Int32Array(lb.buffer, lb.byteOffset, lb.length / 4);
    if (imgs.data.length !== nAll * C * H * W || labels.length !== nAll) throw new Error('--raw files do not match --shape');
    if (C !== mean.length) throw new Error(`the images have ${C} channels, the model's mean ${mean.length}`);
  } else {
    imgs = readIdx(`${a.data}/t10k-images-idx3-ubyte.gz`);
    labels = readIdx(`${a.data}/t10k-labels-idx1-ubyte.gz`).data;
    [nAll, H, W] = imgs.dims;
  }
  const n = a.images > 0 ? Math.min(a.images, nAll) : nAll;
  const per = C * H * W;
  // gplq's normalization (io/dataset.c): v * (1 / (255 std)) + (-mean / std), in float32
  const x = new Float32Array(n * per);
  for (let c = 0; c < C; c++) {
    const s = Math.fround(1 / Math.fround(255 * Math.fround(std[c])));
    const z = Math.fround(-Math.fround(mean[c]) / Math.fround(std[c]));
    for (let i = 0; i < n; i++)
      for (let p = 0; p < H * W; p++)
        x[i * per + c * H * W + p] = Math.fround(Math.fround(imgs.data[i * per + c * H * W + p] * s) + z);
  }
  return ort.InferenceSession.create(a.model, {
    intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: 'sequential',
  }).then(async (sess) => {
    const inName = sess.inputNames[0], outName = sess.outputNames[0];
    const run = async (from, B) => {
      const t = new ort.Tensor('float32', x.subarray(from * per, (from + B) * per), [B, C, H, W]);
      const r = await sess.run({ [inName]: t });
      return r[outName].data;
    };
    if (a.bench) {
      const out = { model: a.model, threads: a.threads, size_bytes: fs.statSync(a.model).size };
      for (const B of [1, 64]) {
        if (B > n) continue;
        await run(0, B); await run(0, B); // warm-up: kernel selection, prepacking
        // --iters passes, or as many as fit in about 3 s (at least 2)
        const t0 = process.hrtime.bigint();
        const el = () => Number(process.hrtime.bigint() - t0) / 1e9;
        let iters = 0;
        while (a.iters ? iters < a.iters : (iters < 2 || el() < 3)) await run((iters++ * B) % (n - B + 1), B);
        const s = el();
        out[`batch${B}`] = { ms_per_batch: 1000 * s / iters, images_per_s: B * iters / s };
      }
      console.log(JSON.stringify(out));
      return;
    }
    let K = 0, correct = 0;
    let logits = null;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i += a.batch) {
      const B = Math.min(a.batch, n - i);
      const l = await run(i, B);
      if (!logits) { K = l.length / B; logits = new Float32Array(n * K); }
      logits.set(l, i * K);
      for (let b = 0; b < B; b++) {
        let best = 0;
        for (let k = 1; k < K; k++) if (l[b * K + k] > l[b * K + best]) best = k;
        if (best === labels[i + b]) correct++;
      }
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const out = { model: a.model, images: n, correct, top1: correct / n, images_per_s: n / secs,
                  gplq_onnx: meta.gplq_onnx || null, runtime: `onnxruntime-node ${ort.env.versions.node}` };
    if (a.logitsOut) fs.writeFileSync(a.logitsOut, Buffer.from(logits.buffer));
    if (a.compare) {
      const g = new Float32Array(new Uint8Array(fs.readFileSync(a.compare)).buffer);
      if (g.length < n * K) throw new Error(`${a.compare} holds ${g.length / K} images' logits, need ${n}`);
      let maxDiff = 0, disagree = 0, gCorrect = 0;
      for (let i = 0; i < n; i++) {
        let bo = 0, bg = 0;
        for (let k = 0; k < K; k++) {
          maxDiff = Math.max(maxDiff, Math.abs(logits[i * K + k] - g[i * K + k]));
          if (logits[i * K + k] > logits[i * K + bo]) bo = k;
          if (g[i * K + k] > g[i * K + bg]) bg = k;
        }
        if (bo !== bg) disagree++;
        if (bg === labels[i]) gCorrect++;
      }
      out.compare = { top1_gplq: gCorrect / n, max_abs_logit_diff: maxDiff,
                      predictions_differ: disagree };
    }
    console.log(JSON.stringify(out));
  });
}

Promise.resolve().then(main).catch((e) => {
  console.error(`ort_eval: ${e.message}`);
  process.exit(1);
});
