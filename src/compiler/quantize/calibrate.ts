// Activation ranges for static quantisation. Each float stage is augmented so that every
// activation a quantised (or pass-through) op reads or writes is a graph output, the stages are
// run in chain order over calibration batches (stage k reads what stage k−1 carried), and one
// collector per tensor turns the values into a range: MinMax, Percentile (2048-bin histogram,
// 99.999%, as onnxruntime's HistogramCalibrater) or Entropy (TensorRT's KL-divergence search over
// 128-bin windows). Collectors stream, so the calibration set never has to sit in memory as
// activations.
import { clone, create } from '@bufbuild/protobuf';
import { InputError } from '../../util/errors.js';
import { DataType, OnnxModel, encodeModel } from '../../onnx/index.js';
import { ModelProtoSchema, TypeProtoSchema, TypeProto_TensorSchema, ValueInfoProtoSchema } from '../../onnx/gen/onnx_pb.js';
import { createSession, type ModelSession, type PlainTensor, type SessionOptions } from '../../backends/onnxruntime.js';
import { prepareBatch, type PreprocessSpec, type TensorData } from '../../backends/image.js';
import { scanImageFolder } from '../../data/imagefolder.js';
import { calibrationTensors } from './ops.js';

export const CALIBRATION_METHODS = ['minmax', 'percentile', 'entropy'] as const;
export type CalibrationMethod = (typeof CALIBRATION_METHODS)[number];

export interface CalibrationOptions {
  method: CalibrationMethod;
  /** Percentile kept (default 99.999, onnxruntime's). */
  percentile?: number;
  /** Histogram bins (default 2048 for percentile and entropy). */
  bins?: number;
  /** Symmetric schemes calibrate |x| (percentile) and symmetric windows. */
  symmetric?: boolean;
  session?: SessionOptions;
}

/** A float stage as the calibrator sees it. */
export interface CalibStage {
  model: OnnxModel;
  inputs: readonly string[];
  carry: readonly string[];
}

/** Labelled, preprocessed calibration images in batches. */
export interface CalibrationData {
  source: string;
  batches: TensorData[];
  /** Label of every image, in batch order. */
  labels: Int32Array;
  count: number;
  skipped: { file: string; error: string }[];
}

/** Pick `limit` items spread over the whole (class-sorted) list, so every class shows up. */
function spread<T>(items: readonly T[], limit: number): T[] {
  if (items.length <= limit) return [...items];
  return Array.from({ length: limit }, (_, i) => items[Math.floor((i * items.length) / limit)]!);
}

/** Decode an ImageFolder once into batches (every later pass reuses them). */
export async function loadCalibrationImages(
  dir: string,
  spec: PreprocessSpec,
  labels: readonly string[],
  opts: { limit?: number; batchSize?: number; /** Keep only full batches (models with a fixed batch size). */ exactBatch?: boolean } = {},
): Promise<CalibrationData> {
  const folder = await scanImageFolder(dir, { labels });
  const items = opts.limit !== undefined ? spread(folder.items, opts.limit) : folder.items;
  const step = opts.batchSize ?? 128;
  const batches: TensorData[] = [];
  const lab: number[] = [];
  const skipped: { file: string; error: string }[] = [];
  for (let i = 0; i < items.length; i += step) {
    const chunk = items.slice(i, i + step);
    const prepared = await prepareBatch(chunk.map((it) => it.file), spec);
    for (const f of prepared.failures) skipped.push({ file: f.name, error: f.error.message });
    if (prepared.indices.length === 0 || (opts.exactBatch && prepared.indices.length !== step)) continue;
    batches.push(prepared.tensor);
    for (const j of prepared.indices) lab.push(chunk[j]!.label);
  }
  if (lab.length === 0) {
    const why = opts.exactBatch ? `no full batch of ${step} readable images (${skipped.length} failed to decode)` : `no readable images (${skipped.length} failed to decode)`;
    throw new InputError(`--calibration ${dir}: ${why}; int8 needs calibration images`, [
      { where: dir, message: 'no readable calibration images', fix: 'point --calibration at an ImageFolder of labelled images the model was trained on' },
    ]);
  }
  return { source: dir, batches, labels: Int32Array.from(lab), count: lab.length, skipped };
}

// ---- collectors ----

interface Collector {
  add(values: Float32Array): void;
  range(): [number, number];
}

class MinMaxCollector implements Collector {
  min = Infinity;
  max = -Infinity;
  add(v: Float32Array): void {
    for (let i = 0; i < v.length; i++) {
      const x = v[i]!;
      if (x < this.min) this.min = x;
      if (x > this.max) this.max = x;
    }
  }
  range(): [number, number] {
    return Number.isFinite(this.min) ? [this.min, this.max] : [0, 0];
  }
}

/**
 * A histogram over [-T, T] (signed) or [0, T] (|x|) whose T grows as larger values arrive: the
 * old counts are re-binned into the wider range, like onnxruntime's merge_histogram.
 */
class Histogram extends MinMaxCollector {
  counts: Float64Array;
  limit = 0;
  constructor(
    readonly bins: number,
    readonly absolute: boolean,
  ) {
    super();
    this.counts = new Float64Array(bins);
  }
  get lo(): number {
    return this.absolute ? 0 : -this.limit;
  }
  edge(i: number): number {
    return this.lo + ((this.limit - this.lo) * i) / this.bins;
  }
  private bin(x: number): number {
    const width = this.limit - this.lo;
    if (width === 0) return this.absolute ? 0 : this.bins >> 1;
    const b = Math.floor(((x - this.lo) / width) * this.bins);
    return b < 0 ? 0 : b >= this.bins ? this.bins - 1 : b;
  }
  override add(v: Float32Array): void {
    super.add(v);
    let amax = 0;
    for (let i = 0; i < v.length; i++) amax = Math.max(amax, Math.abs(v[i]!));
    if (amax > this.limit) {
      const old = this.counts;
      const oldLo = this.lo;
      const oldWidth = this.limit - oldLo;
      this.limit = amax;
      this.counts = new Float64Array(this.bins);
      for (let i = 0; i < this.bins; i++) {
        if (old[i] === 0) continue;
        const centre = oldWidth === 0 ? 0 : oldLo + (oldWidth * (i + 0.5)) / this.bins;
        this.counts[this.bin(centre)]! += old[i]!;
      }
    }
    for (let i = 0; i < v.length; i++) this.counts[this.bin(this.absolute ? Math.abs(v[i]!) : v[i]!)]! += 1;
  }
  total(): number {
    let t = 0;
    for (const c of this.counts) t += c;
    return t;
  }
  /** First bin where the cumulative share reaches q (numpy.searchsorted on the cdf). */
  searchCdf(q: number): number {
    const total = this.total();
    let acc = 0;
    for (let i = 0; i < this.bins; i++) {
      acc += this.counts[i]!;
      if (acc / total >= q) return i;
    }
    return this.bins - 1;
  }
  clip(r: [number, number]): [number, number] {
    return [Math.max(r[0], this.min), Math.min(r[1], this.max)];
  }
}

class PercentileCollector extends Histogram {
  constructor(
    bins: number,
    readonly percentile: number,
    symmetric: boolean,
  ) {
    super(bins, symmetric);
  }
  override range(): [number, number] {
    if (!Number.isFinite(this.min)) return [0, 0];
    if (this.limit === 0) return [this.min, this.max];
    if (this.absolute) {
      const t = this.edge(this.searchCdf(this.percentile / 100) + 1);
      return this.clip([-t, t]);
    }
    const cut = (100 - this.percentile) / 200;
    return this.clip([this.edge(this.searchCdf(cut)), this.edge(this.searchCdf(1 - cut) + 1)]);
  }
}

/**
 * TensorRT's entropy calibration: among symmetric windows of the signed histogram (at least
 * `quantBins` bins wide), pick the one whose 128-level quantised distribution has the smallest
 * KL divergence from the clipped original.
 */
class EntropyCollector extends Histogram {
  constructor(
    bins: number,
    readonly quantBins = 128,
  ) {
    super(bins % 2 === 0 ? bins + 1 : bins, false);
  }
  override range(): [number, number] {
    if (!Number.isFinite(this.min)) return [0, 0];
    if (this.limit === 0) return [this.min, this.max];
    const h = this.counts;
    const zero = this.bins >> 1;
    const half = this.quantBins >> 1;
    let best = { kl: Infinity, start: 0, end: this.bins };
    const step = Math.max(1, Math.floor((zero + 1 - half) / 256));
    for (let i = half; i <= zero; i += step) {
      const start = zero - i;
      const end = Math.min(this.bins, zero + i + 1);
      const len = end - start;
      const p = Array.from(h.subarray(start, end));
      let below = 0;
      let above = 0;
      for (let j = 0; j < start; j++) below += h[j]!;
      for (let j = end; j < this.bins; j++) above += h[j]!;
      p[0]! += below;
      p[len - 1]! += above;
      const merged = Math.floor(len / this.quantBins);
      const q = new Array<number>(len).fill(0);
      for (let b = 0; b < this.quantBins; b++) {
        const s = b * merged;
        const e = b === this.quantBins - 1 ? len : s + merged;
        let sum = 0;
        let nonzero = 0;
        for (let j = s; j < e; j++) {
          sum += h[start + j]!;
          if (p[j] !== 0) nonzero++;
        }
        if (nonzero === 0) continue;
        for (let j = s; j < e; j++) if (p[j] !== 0) q[j] = sum / nonzero;
      }
      const kl = klDivergence(p, q);
      if (kl < best.kl) best = { kl, start, end };
    }
    return this.clip([this.edge(best.start), this.edge(best.end)]);
  }
}

/** KL(p‖q) after normalising, with zeros smoothed by a small epsilon (as onnxruntime does). */
function klDivergence(p: number[], q: number[]): number {
  const eps = 1e-4;
  const smooth = (d: number[]): number[] | null => {
    const zeros = d.filter((x) => x === 0).length;
    const nonzeros = d.length - zeros;
    if (nonzeros === 0) return null;
    const sum = d.reduce((a, b) => a + b, 0);
    const norm = d.map((x) => x / sum);
    const take = (eps * zeros) / nonzeros;
    return norm.map((x) => (x === 0 ? eps : x - take));
  };
  const ps = smooth(p);
  const qs = smooth(q);
  if (!ps || !qs) return Infinity;
  let kl = 0;
  for (let i = 0; i < ps.length; i++) if (ps[i]! > 0) kl += ps[i]! * Math.log(ps[i]! / Math.max(qs[i]!, 1e-12));
  return kl;
}

function makeCollector(opts: CalibrationOptions): Collector {
  switch (opts.method) {
    case 'minmax':
      return new MinMaxCollector();
    case 'percentile':
      return new PercentileCollector(opts.bins ?? 2048, opts.percentile ?? 99.999, opts.symmetric ?? false);
    case 'entropy':
      return new EntropyCollector(opts.bins ?? 2048);
  }
}

// ---- running the stages ----

/** A copy of `model` whose graph also outputs `tensors` (typed float, shape left to onnxruntime). */
export function augmentOutputs(model: OnnxModel, tensors: readonly string[]): OnnxModel {
  const proto = clone(ModelProtoSchema, model.proto);
  const g = proto.graph!;
  const have = new Set(g.output.map((o) => o.name));
  for (const t of tensors) {
    if (have.has(t)) continue;
    have.add(t);
    g.output.push(
      create(ValueInfoProtoSchema, {
        name: t,
        type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType: DataType.FLOAT }) } }),
      }),
    );
  }
  return new OnnxModel(proto, model.source, model.baseDir);
}

export type StageRanges = Map<string, [number, number]>;

export interface CalibrationResult {
  method: CalibrationMethod;
  /** Per stage: tensor → [rmin, rmax]. */
  ranges: StageRanges[];
  images: number;
}

/** Run the float stages in chain order over `data` and collect a range per calibrated tensor. */
export async function calibrateStages(stages: readonly CalibStage[], inputName: string, data: Pick<CalibrationData, 'batches'>, opts: CalibrationOptions): Promise<CalibrationResult> {
  const sessions: ModelSession[] = [];
  const wanted = stages.map((s) => calibrationTensors(s.model));
  const collectors = wanted.map((ts) => new Map(ts.map((t) => [t, makeCollector(opts)] as const)));
  let images = 0;
  try {
    for (const [k, s] of stages.entries()) {
      sessions.push(await createSession(encodeModel(augmentOutputs(s.model, wanted[k]!)), { graphOptimizationLevel: 'basic', ...opts.session }));
    }
    for (const batch of data.batches) {
      images += batch.dims[0] ?? 0;
      let alive: Record<string, PlainTensor> = { [inputName]: { data: batch.data, dims: batch.dims } };
      for (const [k, s] of stages.entries()) {
        const feeds: Record<string, PlainTensor> = {};
        for (const name of s.inputs) feeds[name] = alive[name]!;
        const out = await sessions[k]!.run(feeds);
        const all: Record<string, PlainTensor> = { ...feeds, ...out };
        for (const [t, c] of collectors[k]!) {
          const v = all[t];
          if (v && v.data instanceof Float32Array) c.add(v.data);
        }
        const next: Record<string, PlainTensor> = {};
        for (const name of s.carry) next[name] = out[name] ?? alive[name]!;
        alive = next;
      }
    }
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
  return { method: opts.method, images, ranges: collectors.map((m) => new Map([...m].map(([t, c]) => [t, c.range()] as const))) };
}

/** Exposed for tests: the range one collector gives for a set of values. */
export function rangeOf(values: Float32Array[], opts: CalibrationOptions): [number, number] {
  const c = makeCollector(opts);
  for (const v of values) c.add(v);
  return c.range();
}

