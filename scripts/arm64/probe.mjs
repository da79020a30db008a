// Runs one bundle through edgeexit's device runtime (loadBundle → classify) and writes, per image,
// the class each exit gives and the cascade's label and exit decision. The same file runs under
// x86 Node (from the repo) and arm64 Node (copied into .arm64/app by the lane), so the two JSON
// files can be compared image by image (compare.mjs).
//   node probe.mjs <bundle> <key.pub> <test:N | calibration[:N]> <out.json>
// Per-exit labels come from the runtime itself: exit k is forced by threshold 0 at exit k, and the
// exits before it are kept shut with threshold 1 under a huge softmax temperature (probabilities
// near uniform, so never 1); argmax, hence the label, does not depend on the temperature.
import { writeFile, rename, open } from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { loadBundle } from 'edgeexit/runtime';
import { loadFashionMnist, fashionMnistLabelMap } from '../../dist/data/idx.js';
import { scanImageFolder } from '../../dist/data/imagefolder.js';
import { decodeImage, toTensor } from '../../dist/backends/image.js';

const [bundle, keyFile, source, outFile] = process.argv.slice(2);
if (!outFile) {
  console.error('probe.mjs: usage: probe.mjs <bundle> <key.pub> <test:N | calibration[:N]> <out.json>');
  process.exit(64);
}
const SHUT = 1e6;
const CASCADE_THRESHOLD = 0.9;

async function images(manifest) {
  const spec = manifest.input.preprocess;
  if (source.startsWith('test:')) {
    const n = Number(source.slice(5));
    const fm = await loadFashionMnist('test');
    const map = fashionMnistLabelMap(manifest.labels, 'bundle labels');
    const per = fm.images.rows * fm.images.cols;
    const pixels = [];
    const truth = [];
    for (let i = 0; i < n; i++) {
      pixels.push({ data: fm.images.pixels.subarray(i * per, (i + 1) * per), width: fm.images.cols, height: fm.images.rows, channels: 1 });
      truth.push(map[fm.labels[i]]);
    }
    return { tensor: toTensor(pixels, spec), truth };
  }
  const root = path.resolve(import.meta.dirname, '../../calibration/fashion-mnist');
  const folder = await scanImageFolder(root, { labels: manifest.labels });
  // calibration:N takes N images spread evenly over the folder (it is ordered by class).
  const limit = source.startsWith('calibration:') ? Number(source.slice(12)) : folder.items.length;
  const step = folder.items.length / limit;
  folder.items = Array.from({ length: limit }, (_, i) => folder.items[Math.floor(i * step)]);
  const opts = { colorspace: spec.colorspace, width: spec.size[1], height: spec.size[0] };
  const pixels = [];
  for (const it of folder.items) pixels.push(await decodeImage(it.file, opts));
  return { tensor: toTensor(pixels, spec), truth: folder.items.map((it) => it.label) };
}

function labelsOf(result) {
  return result.items.map((it) => (it.ok ? it.classIndex : -1));
}

async function perExit(runner, tensor) {
  const m = runner.manifest;
  const out = {};
  if (m.kind === 'cbnet') {
    const hybridImage = await runner.classify(tensor, { policy: 'hybrid', thresholds: [0], batchSize: 256 });
    out['classifier<-image'] = labelsOf(hybridImage);
    const cbnet = await runner.classify(tensor, { policy: 'cbnet', batchSize: 256 });
    out['classifier<-converter'] = labelsOf(cbnet);
    return out;
  }
  const names = m.stages.map((s) => s.exit);
  for (let k = 0; k < names.length; k++) {
    const thresholds = names.slice(0, -1).map((_, j) => (j < k ? 1 : 0));
    const temperatures = names.map((_, j) => (j < k ? SHUT : 1));
    const r = await runner.classify(tensor, { thresholds, temperatures, metric: 'max-prob', batchSize: 256 });
    const wrong = r.items.filter((it) => it.ok && it.exit !== k).length;
    if (wrong) throw new Error(`probe: forcing exit ${k} (${names[k]}) let ${wrong} samples leave elsewhere`);
    out[names[k]] = labelsOf(r);
  }
  return out;
}

async function cascade(runner, tensor) {
  const m = runner.manifest;
  const opts = m.kind === 'cbnet'
    ? { policy: 'hybrid', thresholds: [CASCADE_THRESHOLD], batchSize: 1 }
    : { thresholds: m.stages.slice(0, -1).map(() => CASCADE_THRESHOLD), metric: 'max-prob', temperatures: m.stages.map(() => 1), batchSize: 1 };
  const r = await runner.classify(tensor, opts);
  const conf = createHash('sha256');
  for (const it of r.items) conf.update(Float64Array.of(it.ok ? it.confidence : NaN));
  return {
    options: { ...opts },
    label: labelsOf(r),
    exit: r.items.map((it) => (it.ok ? it.exit : -1)),
    confidence: r.items.map((it) => (it.ok ? it.confidence : null)),
    confidenceSha256: conf.digest('hex'),
    exitCounts: r.exitCounts,
  };
}

const runner = await loadBundle(bundle, { publicKey: keyFile, threads: 1, onWarning: (l) => console.error(l) });
try {
  const { tensor, truth } = await images(runner.manifest);
  const t0 = Date.now();
  const result = {
    bundle: path.basename(bundle),
    arch: process.arch,
    node: process.version,
    source,
    samples: truth.length,
    truth,
    perExit: await perExit(runner, tensor),
    cascade: await cascade(runner, tensor),
    ms: 0,
  };
  result.ms = Date.now() - t0;
  const tmp = `${outFile}.tmp`;
  await writeFile(tmp, JSON.stringify(result));
  const fh = await open(tmp, 'r+');
  await fh.sync();
  await fh.close();
  await rename(tmp, outFile);
  console.error(`probe ${result.bundle} ${process.arch} ${source}: ${truth.length} images in ${result.ms} ms`);
} finally {
  await runner.close();
}
