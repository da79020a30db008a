// BundleRunner.classify for every family: resolve the call's exit plan (cached), take a tensor or
// decode images window by window, cut them into batches for the family's runner, and collect
// predictions, exit counts and timings in input order. This is the per-image path: it allocates
// per call only what the result needs.
import { performance } from 'node:perf_hooks';
import type { Manifest } from '../bundle/manifest.js';
import { channelError, prepareBatch, type ImageInput, type PreprocessSpec, type TensorData } from '../backends/image.js';
import { InputError, formatProblem } from '../util/errors.js';
import type { ExitPlan, FamilyRunner } from './families/family.js';
import type { BundleRunner, ClassifyItem, ClassifyOptions, ClassifyResult } from './types.js';

/**
 * Default samples per cascade run. Bounded rather than "everything" because image lists are
 * decoded batch by batch: a folder of 10 000 camera images must not be held decoded at once.
 */
export const DEFAULT_BATCH_SIZE = 64;

/** The image a bundle reads: its preprocessing, NCHW sizes, and values per sample. */
export interface InputShape {
  name: string;
  spec: PreprocessSpec;
  c: number;
  h: number;
  w: number;
  per: number;
}

/** Made once per bundle: the decoder caches lookup tables by spec object. */
export function inputShapeOf(manifest: Manifest): InputShape {
  const spec: PreprocessSpec = { ...manifest.input.preprocess, size: [...manifest.input.preprocess.size] };
  const [h, w] = spec.size;
  const c = spec.colorspace === 'rgb' ? 3 : 1;
  return { name: manifest.input.name, spec, c, h, w, per: c * h * w };
}

/** One all-zero sample, for warm-up runs. */
export function blankInput(s: InputShape): TensorData {
  return { data: new Float32Array(s.per), dims: [1, s.c, s.h, s.w] };
}

// A plan (resolved and validated policy) depends on four options only; at batch 1 resolving it
// anew per call is a measurable share of a 50 µs inference, so the last few are kept.
function planCache(runner: FamilyRunner): (o: ClassifyOptions) => ExitPlan {
  const plans = new Map<string, ExitPlan>();
  return (o) => {
    const key = o.policy === undefined && o.thresholds === undefined && o.metric === undefined && o.temperatures === undefined ? '' : JSON.stringify([o.policy, o.thresholds, o.metric, o.temperatures]);
    let plan = plans.get(key);
    if (!plan) {
      plan = runner.plan(o);
      if (plans.size >= 16) plans.delete(plans.keys().next().value!);
      plans.set(key, plan);
    }
    return plan;
  };
}

/** What one classify call builds up, batch by batch. */
interface CallState {
  runner: FamilyRunner;
  plan: ExitPlan;
  labels: readonly string[];
  per: number;
  batch: number;
  items: ClassifyItem[];
  timing: ClassifyResult['timing'];
  /** Told of the first input of a window that was stretched to another aspect ratio. */
  onStretched: (img: { name: string; width: number; height: number }) => void;
}

/** Runs the rows of `tensor` in batches; rows[i] is the input index of row i. */
async function runRows(st: CallState, tensor: TensorData, rows: readonly number[], nameOf: (i: number) => string): Promise<void> {
  const { per, batch, plan, timing, labels } = st;
  for (let start = 0; start < rows.length; start += batch) {
    const end = Math.min(rows.length, start + batch);
    const chunk =
      start === 0 && end === rows.length
        ? tensor
        : // A view, not a copy: onnxruntime-node 1.30 honours the view's offset (checked; the
          // batch-16 tests compare every chunk with the reference).
          { data: tensor.data.subarray(start * per, end * per), dims: [end - start, ...tensor.dims.slice(1)] };
    const r = await st.runner.runBatch(chunk, plan);
    timing.cascadeMs += r.totalMs;
    timing.overheadMs += r.overheadMs;
    timing.batches++;
    r.stageMs.forEach((ms, k) => (timing.stageMs[k]! += ms));
    for (const run of r.runs ?? []) {
      const t = timing.runs!.find((x) => x.name === run.name);
      if (t) {
        t.ms += run.ms;
        t.rows += run.rows;
      } else timing.runs!.push({ ...run });
    }
    r.samples.forEach((s, i) => {
      const index = rows[start + i]!;
      st.items.push({ ok: true, index, name: nameOf(index), label: labels[s.classIndex] ?? String(s.classIndex), exitName: plan.exitNames[s.exit]!, ...s });
    });
  }
}

async function classifyTensor(st: CallState, t: TensorData, shape: InputShape, source: string): Promise<void> {
  const { c, h, w, per } = shape;
  const dims = t.dims;
  if (dims.length === 4 && dims[1] !== c) throw channelError(`input tensor for ${source}`, 'tensor', c, shape.spec, `${dims[1]} (dims [${dims.join(',')}])`);
  if (dims.length !== 4 || dims[1] !== c || dims[2] !== h || dims[3] !== w || t.data.length !== (dims[0] ?? 0) * per) {
    throw new InputError(formatProblem({ where: 'input tensor', expected: `NCHW dims [N,${c},${h},${w}] (${shape.name})`, got: `dims [${dims.join(',')}] with ${t.data.length} values` }));
  }
  const n = dims[0]!;
  await runRows(st, t, Array.from({ length: n }, (_, i) => i), (i) => `row #${i}`);
}

async function classifyImages(st: CallState, list: readonly ImageInput[], spec: PreprocessSpec): Promise<void> {
  const nameOf = (i: number): string => {
    const x = list[i]!;
    if (typeof x === 'string') return x;
    if (x instanceof Uint8Array) return `image #${i}`;
    return x.name ?? `image #${i}`;
  };
  // Decode in windows so a long list of files is neither decoded one by one (slow) nor held
  // in memory all at once; a window is a whole number of batches.
  const window = st.batch * Math.max(1, Math.ceil(64 / st.batch));
  for (let start = 0; start < list.length; start += window) {
    const slice = list.slice(start, start + window);
    const p0 = performance.now();
    const prepared = await prepareBatch(slice, spec);
    st.timing.preprocessMs += performance.now() - p0;
    if (prepared.stretched[0]) st.onStretched(prepared.stretched[0]);
    for (const f of prepared.failures) st.items.push({ ok: false, index: start + f.index, name: f.name, error: f.error });
    await runRows(st, prepared.tensor, prepared.indices.map((i) => start + i), nameOf);
  }
}

function summarise({ items, plan, timing }: CallState): ClassifyResult {
  items.sort((a, b) => a.index - b.index);
  const exitCounts = plan.exitNames.map(() => 0);
  for (const it of items) if (it.ok) exitCounts[it.exit]!++;
  const policy = plan.policy;
  return {
    items,
    metric: policy.policy.metric,
    // Copies: the plan is cached across calls.
    thresholds: policy.thresholds === null ? null : [...policy.thresholds],
    temperatures: [...policy.temperatures],
    exitNames: [...plan.exitNames],
    ...(plan.runOrder ? { policy: plan.runOrder } : {}),
    exitCounts,
    timing,
  };
}

/** BundleRunner.classify over a family's runner (see BundleRunner.classify for what it does). */
export function makeClassify(source: string, manifest: Manifest, runner: FamilyRunner, shape: InputShape, warn: (line: string) => void): BundleRunner['classify'] {
  const planOf = planCache(runner);
  // A stretched frame of another aspect ratio still classifies, only worse: say so once per runner.
  let stretchWarned = false;
  const onStretched = (img: { name: string; width: number; height: number }): void => {
    if (stretchWarned) return;
    stretchWarned = true;
    warn(stretchWarning(img, manifest.input.preprocess.size));
  };
  return async (inputs, o = {}) => {
    const plan = planOf(o);
    if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1)) {
      throw new InputError(formatProblem({ where: 'batch size', expected: 'a positive integer', got: String(o.batchSize) }));
    }
    const timing: ClassifyResult['timing'] = { preprocessMs: 0, cascadeMs: 0, stageMs: manifest.stages.map(() => 0), overheadMs: 0, batches: 0, ...(plan.runOrder ? { runs: [] } : {}) };
    const st: CallState = { runner, plan, labels: manifest.labels, per: shape.per, batch: o.batchSize ?? DEFAULT_BATCH_SIZE, items: [], timing, onStretched };
    if (Array.isArray(inputs)) await classifyImages(st, inputs as readonly ImageInput[], shape.spec);
    else await classifyTensor(st, inputs as TensorData, shape, source);
    return summarise(st);
  };
}

/**
 * The one-line warning for an image stretched to another aspect ratio (resize policy `stretch`).
 *
 * @example
 * stretchWarning({ name: 'cam.jpg', width: 640, height: 480 }, [28, 28]); // 'warn: cam.jpg is 640×480 but the model reads 28×28: …'
 */
export function stretchWarning(img: { name: string; width: number; height: number }, size: readonly [number, number]): string {
  const [h, w] = size;
  return (
    `warn: ${img.name} is ${img.width}×${img.height} but the model reads ${w}×${h}: resize policy 'stretch' distorts its aspect ratio ` +
    `(fix: set "resize": "cover" or "contain" in the model's edgeexit.preprocess and compile again, or crop the images first)`
  );
}
