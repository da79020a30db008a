// Image decoding at batch 1, and what it does to end-to-end latency. Two parts:
//
// 1. Decode table: per-image µs (p50/p95), one image at a time (each awaited, as a device
//    classifying frames one by one does), for sharp as edgeexit used it, sharp with the settings
//    that could help (operation cache on/off, libvips threads, sequentialRead, decode-only,
//    metadata-only as the floor of any sharp call) and the direct PNG decoder of
//    src/runtime/png.ts, on the committed calibration PNGs (28×28 gray) and on larger synthetic
//    PNG/JPEG images. Variants are interleaved chunk by chunk so load from neighbours falls on
//    all of them alike.
// 2. End to end vs model-only, batch 1, as scripts/bench.ts measures them: fmnist-branchy
//    compiled fp32 for x86-host, one thread; model-only = per-sample latencyMs of classify on a
//    preprocessed tensor (bench.ts's model-only); the same call's wall time; end to end = wall
//    time of classify on one image's encoded PNG bytes (and on its file path), with the direct
//    decoder on and off; all interleaved per chunk. Decoding right after an inference runs with
//    cold caches: the same 28×28 decode measured 2–5x slower there than in the decode table's
//    tight loop on the 2-vCPU VM, so the end-to-end gap is larger than the table suggests.
//
//   npx vite-node scripts/decode-bench.ts [--limit 3000] [--big 200] [--parts decode,e2e]
//       [--json .bench/decode-bench.json]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { compileModel } from '../src/compiler/index.js';
import { scanImageFolder } from '../src/data/imagefolder.js';
import { loadBundle, type ClassifyOptions } from '../src/runtime/bundle-runner.js';
import { decodeImage, decodePngDirect, prepareBatch, setPngFastPath, type DecodeOptions } from '../src/backends/image.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const limit = Number(flag('limit', '3000'));
const bigCount = Number(flag('big', '200'));
const jsonOut = flag('json', '.bench/decode-bench.json');
/** Which parts to run: decode (the table), e2e (end to end vs model-only), or both. */
const parts = new Set(flag('parts', 'decode,e2e').split(','));
const log = (line: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const loads: { phase: string; loadavg: number[] }[] = [];
const noteLoad = (phase: string): void => void loads.push({ phase, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100) });

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}
function stats(xs: number[]): { n: number; mean: number; p50: number; p95: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), p50: quantile(s, 0.5), p95: quantile(s, 0.95) };
}
function mdTable(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

// ------------------------------------------------------------------------------ data
const calibrationDir = path.resolve('calibration', 'fashion-mnist');
const folder = await scanImageFolder(calibrationDir);
const step = folder.items.length / Math.min(limit, folder.items.length);
const calItems = Array.from({ length: Math.min(limit, folder.items.length) }, (_, i) => folder.items[Math.floor(i * step)]!);
const calBytes = await Promise.all(calItems.map((it) => fsp.readFile(it.file)));

/** A photo-like test image: smooth gradients, edges and some noise, so codecs do real work. */
function synthetic(w: number, h: number, seed: number): Buffer {
  const px = Buffer.alloc(w * h * 3);
  let a = seed >>> 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      a = (a * 1664525 + 1013904223) >>> 0;
      const noise = (a >>> 27) - 16;
      const i = (y * w + x) * 3;
      const disc = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (Math.min(w, h) / 3) ** 2;
      px[i] = Math.max(0, Math.min(255, ((x * 255) / w + noise) | 0));
      px[i + 1] = Math.max(0, Math.min(255, ((y * 255) / h + noise) | 0));
      px[i + 2] = disc ? 200 + (noise >> 1) : 40;
    }
  }
  return px;
}
interface ImageSet {
  name: string;
  images: Uint8Array[];
  /** The model input the images are decoded for (the direct decoder needs this to be the file's size). */
  decode: DecodeOptions;
}
async function bigSet(name: string, w: number, h: number, format: 'png' | 'jpeg', decode: DecodeOptions): Promise<ImageSet> {
  const images: Uint8Array[] = [];
  const variety = 8;
  for (let k = 0; k < variety; k++) {
    const s = sharp(synthetic(w, h, k + 1), { raw: { width: w, height: h, channels: 3 } });
    images.push(await (format === 'png' ? s.png() : s.jpeg({ quality: 90 })).toBuffer());
  }
  return { name, images: Array.from({ length: bigCount }, (_, i) => images[i % variety]!), decode };
}
const sets: ImageSet[] = [
  { name: `calibration PNG 28×28 gray (${calBytes.length} files) → gray 28×28`, images: calBytes, decode: { colorspace: 'gray', width: 28, height: 28 } },
  await bigSet('PNG 224×224 RGB → rgb 224×224', 224, 224, 'png', { colorspace: 'rgb', width: 224, height: 224 }),
  await bigSet('PNG 640×480 RGB → rgb 224×224 (resize)', 640, 480, 'png', { colorspace: 'rgb', width: 224, height: 224 }),
  await bigSet('JPEG 224×224 q90 → rgb 224×224', 224, 224, 'jpeg', { colorspace: 'rgb', width: 224, height: 224 }),
  await bigSet('JPEG 640×480 q90 → rgb 224×224 (resize)', 640, 480, 'jpeg', { colorspace: 'rgb', width: 224, height: 224 }),
];

// ------------------------------------------------------------------------------ decode variants
/** The pipeline decodeImage runs, with sharp's options as parameters. */
function sharpPipeline(bytes: Uint8Array, o: DecodeOptions, sequentialRead: boolean): Promise<unknown> {
  let p = sharp(bytes, { failOn: 'error', sequentialRead }).rotate().flatten({ background: { r: 0, g: 0, b: 0 } });
  p = o.colorspace === 'gray' ? p.grayscale() : p.toColourspace('srgb');
  return p.resize(o.width, o.height, { fit: 'fill' }).raw({ depth: 'uchar' }).toBuffer();
}
const defaultConcurrency = sharp.concurrency();
interface Variant {
  name: string;
  /** Global sharp settings for this variant (restored to edgeexit's after). */
  setup?: () => void;
  run: (bytes: Uint8Array, o: DecodeOptions) => Promise<unknown> | unknown;
}
const variants: Variant[] = [
  { name: 'sharp pipeline, sharp defaults (cache on)', setup: () => sharp.cache(true), run: (b, o) => sharpPipeline(b, o, false) },
  { name: 'sharp pipeline, cache(false) (edgeexit before)', run: (b, o) => sharpPipeline(b, o, false) },
  { name: 'sharp pipeline, cache(false) + concurrency(1)', setup: () => sharp.concurrency(1), run: (b, o) => sharpPipeline(b, o, false) },
  { name: 'sharp pipeline, cache(false) + sequentialRead', run: (b, o) => sharpPipeline(b, o, true) },
  { name: 'sharp decode only: raw().toBuffer()', run: (b) => sharp(b).raw().toBuffer() },
  { name: 'sharp metadata() only (floor of any sharp call)', run: (b) => sharp(b).metadata() },
  {
    name: 'decodeImage, direct PNG decoder off (= sharp)',
    setup: () => setPngFastPath(false),
    run: (b, o) => decodeImage(b, o),
  },
  { name: 'decodeImage, direct PNG decoder on (edgeexit now)', run: (b, o) => decodeImage(b, o) },
  { name: 'decodePngDirect (sync; null → would fall back)', run: (b, o) => decodePngDirect(b, o) },
];
function restore(): void {
  sharp.cache(false);
  sharp.concurrency(defaultConcurrency);
  setPngFastPath(true);
}

// Warm every variant on every set (first calls load codecs and JIT the decoder).
if (!parts.has('decode')) sets.length = 0;
for (const set of sets) for (const v of variants) {
  v.setup?.();
  for (let i = 0; i < 20; i++) await v.run(set.images[i % set.images.length]!, set.decode);
  restore();
}

noteLoad('decode start');
const decodeUs: Record<string, Record<string, number[]>> = {};
const directHits: Record<string, number> = {};
for (const set of sets) {
  decodeUs[set.name] = Object.fromEntries(variants.map((v) => [v.name, []]));
  directHits[set.name] = set.images.filter((b) => decodePngDirect(b, set.decode) !== null).length;
  const chunk = 50;
  for (let from = 0; from < set.images.length; from += chunk) {
    const to = Math.min(set.images.length, from + chunk);
    for (const v of variants) {
      v.setup?.();
      const out = decodeUs[set.name]![v.name]!;
      for (let i = from; i < to; i++) {
        const t0 = performance.now();
        await v.run(set.images[i]!, set.decode);
        out.push((performance.now() - t0) * 1000);
      }
      restore();
    }
  }
  log(`decode: ${set.name} done`);
}
noteLoad('decode done');

// ------------------------------------------------------------------------------ end to end
const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-decode-bench-'));
const bundleDir = path.join(work, 'branchy-x86-fp32');
await compileModel({ model: path.resolve('models', 'fmnist-branchy', 'fmnist-branchy.onnx'), device: 'x86-host', out: bundleDir, precision: 'fp32', latency: false });
const runner = await loadBundle(bundleDir, { device: 'x86-host', threads: 1, allowUnsigned: true, onWarning: (l) => log(l) }); // compiled here, unsigned
const spec = runner.manifest.input.preprocess;
const prepared = await prepareBatch(calBytes, spec);
if (prepared.failures.length > 0) throw new Error(`could not prepare ${prepared.failures.length} calibration images`);
const per = 28 * 28;
// Early exit with the thresholds and temperatures that scripts/bench.ts calibrated for the fp32
// bundle (docs/benchmarks.md); fixed here, so this run measures decoding, not calibration.
const policies: { name: string; opts: ClassifyOptions }[] = [
  { name: 'full float (last exit)', opts: { thresholds: null } },
  { name: 'early-exit float', opts: { thresholds: [0.616306, 0.753092], temperatures: [1.06155, 1.132933, 1.579873] } },
];
// 'model-only' is what scripts/bench.ts reports (the cascade's own per-sample latencyMs);
// 'tensor, classify wall' is the wall time of the same classify call, so the difference between
// it and the e2e modes is what decoding adds, and the difference between it and model-only is
// the classify call's own bookkeeping.
type Mode = 'model-only' | 'tensor, classify wall' | 'e2e bytes, direct' | 'e2e bytes, sharp' | 'e2e path, direct' | 'e2e path, sharp';
const modes: Mode[] = ['model-only', 'tensor, classify wall', 'e2e bytes, direct', 'e2e bytes, sharp', 'e2e path, direct', 'e2e path, sharp'];
const e2e: Record<string, Record<Mode, number[]>> = Object.fromEntries(policies.map((p) => [p.name, Object.fromEntries(modes.map((m) => [m, [] as number[]])) as Record<Mode, number[]>]));
/** Every end-to-end answer must equal the model-only one for the same image (same pixels in). */
const modelClass: Record<string, number[]> = Object.fromEntries(policies.map((p) => [p.name, [] as number[]]));
let disagreements = 0;

async function once(mode: Mode, i: number, opts: ClassifyOptions): Promise<{ ms: number; classIndex: number }> {
  if (mode === 'model-only' || mode === 'tensor, classify wall') {
    const t0 = performance.now();
    const r = await runner.classify({ data: prepared.tensor.data.subarray(i * per, (i + 1) * per), dims: [1, 1, 28, 28] }, { ...opts, batchSize: 1 });
    const wall = performance.now() - t0;
    const p = r.items[0]!;
    if (!p.ok) throw p.error;
    return { ms: mode === 'model-only' ? p.latencyMs : wall, classIndex: p.classIndex };
  }
  setPngFastPath(mode.endsWith('direct'));
  const input = mode.startsWith('e2e path') ? calItems[i]!.file : calBytes[i]!;
  const t0 = performance.now();
  const r = await runner.classify([input], { ...opts, batchSize: 1 });
  const ms = performance.now() - t0;
  setPngFastPath(true);
  const p = r.items[0]!;
  if (!p.ok) throw p.error;
  return { ms, classIndex: p.classIndex };
}

// Warm-up.
if (!parts.has('e2e')) policies.length = 0;
for (const p of policies) for (const m of modes) for (let i = 0; i < 50; i++) await once(m, i % calBytes.length, p.opts);
noteLoad('end-to-end start');
const chunk = 100;
for (let from = 0; from < calBytes.length; from += chunk) {
  const to = Math.min(calBytes.length, from + chunk);
  for (const p of policies) {
    for (const m of modes) {
      for (let i = from; i < to; i++) {
        const r = await once(m, i, p.opts);
        e2e[p.name]![m].push(r.ms);
        if (m === 'model-only') modelClass[p.name]![i] = r.classIndex;
        else if (r.classIndex !== modelClass[p.name]![i]) disagreements++;
      }
    }
  }
}
noteLoad('end-to-end done');
log('end to end done');
await runner.close();
await fsp.rm(work, { recursive: true, force: true });

// ------------------------------------------------------------------------------ report
const us = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const out: string[] = [];
out.push(`Decode at batch 1 (µs per image, each call awaited before the next), ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}, Node ${process.version}`, '');
for (const set of sets) {
  const ref = stats(decodeUs[set.name]!['sharp pipeline, cache(false) (edgeexit before)']!).p50;
  out.push(`**${set.name}** — ${set.images.length} decodes per variant; direct decoder applies to ${directHits[set.name]} of ${set.images.length}`, '');
  out.push(
    mdTable(
      ['variant', 'p50 µs', 'p95 µs', 'mean µs', 'speed-up vs edgeexit before (p50)'],
      variants.map((v) => {
        const s = stats(decodeUs[set.name]![v.name]!);
        return [v.name, us(s.p50), us(s.p95), us(s.mean), `${(ref / s.p50).toFixed(1)}x`];
      }),
    ),
    '',
  );
}
out.push(`End to end vs model-only, batch 1 (ms per image; fmnist-branchy fp32 for x86-host, 1 thread; ${calBytes.length} calibration PNGs, modes interleaved per ${chunk} images)`, '');
const e2eRows: string[][] = [];
for (const p of policies) {
  const model = stats(e2e[p.name]!['model-only']);
  for (const m of modes) {
    const s = stats(e2e[p.name]![m]);
    const wall = stats(e2e[p.name]!['tensor, classify wall']);
    const e2eMode = m.startsWith('e2e');
    e2eRows.push([
      p.name,
      m,
      s.mean.toFixed(3),
      s.p50.toFixed(3),
      s.p95.toFixed(3),
      `${(s.p50 / model.p50).toFixed(2)}x`,
      e2eMode ? (s.p50 <= 2 * model.p50 ? 'yes' : 'no') : '',
      e2eMode ? `${(s.p50 / wall.p50).toFixed(2)}x` : '',
    ]);
  }
}
out.push(mdTable(['policy', 'mode', 'mean ms', 'p50 ms', 'p95 ms', 'p50 / model-only p50', '≤ 2x?', 'p50 / tensor classify wall p50'], e2eRows), '');
out.push(`End-to-end answers differing from model-only on the same image: ${disagreements} of ${calBytes.length * policies.length * (modes.length - 1)}`, '');
out.push(`Load (os.loadavg 1/5/15): ${loads.map((l) => `${l.phase} ${l.loadavg.join('/')}`).join('; ')}`);
process.stdout.write(out.join('\n') + '\n');
await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
await fsp.writeFile(
  jsonOut,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      decode: Object.fromEntries(sets.map((s) => [s.name, { directHits: directHits[s.name], variants: Object.fromEntries(variants.map((v) => [v.name, stats(decodeUs[s.name]![v.name]!)])) }])),
      endToEnd: Object.fromEntries(policies.map((p) => [p.name, Object.fromEntries(modes.map((m) => [m, stats(e2e[p.name]![m])]))])),
      loads,
    },
    null,
    2,
  ) + '\n',
);
log(`wrote ${jsonOut}`);
