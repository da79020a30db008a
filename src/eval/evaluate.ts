// Accuracy of every exit of an early-exit model on a labelled dataset, plus the "oracle" view:
// for each sample, the cheapest exit that already gets it right. The oracle distribution is the
// upper bound any exit policy can reach, so it tells whether calibrating thresholds is worth it.
import { fashionMnistLabelMap, loadFashionMnist } from '../data/idx.js';
import { scanImageFolder } from '../data/imagefolder.js';
import { InputError, UnsupportedError, formatProblem } from '../util/errors.js';
import {
  channelsOf,
  prepareBatch,
  toTensorInto,
  type PreprocessSpec,
  type ResizePolicy,
  type TensorData,
} from '../backends/image.js';
import { asFloat32, createSession, type SessionOptions } from '../backends/onnxruntime.js';

export type EvalData =
  | { kind: 'idx'; split: 'train' | 'test'; dir?: string }
  | { kind: 'imagefolder'; dir: string };

export interface EvalProgress {
  /** Samples run through the model so far (skipped ones included). */
  done: number;
  total: number;
  skipped: number;
}

export interface EvaluateOptions {
  /** Path of the .onnx model, or its bytes. */
  model: string | Uint8Array;
  data: EvalData;
  /** The model's `edgeexit.preprocess` (read from its metadata by the ONNX codec). */
  preprocess: PreprocessSpec;
  /**
   * The model's `edgeexit.labels`, in logit order. ImageFolder subfolders and Fashion-MNIST's
   * classes are matched against them by name (src/data/labels.ts), so their order is the model's.
   */
  labels?: readonly string[];
  batchSize?: number;
  /** Evaluate only this many samples: the first N of an IDX split, N evenly spaced ImageFolder images. */
  limit?: number;
  onProgress?: (p: EvalProgress) => void;
  /** Output names to treat as exits, cheapest first (default: every output, in graph order). */
  exits?: readonly string[];
  /** How ImageFolder images are fitted to the input size (default 'stretch'). */
  resize?: ResizePolicy;
  /** ImageFolder images decoded at once. */
  concurrency?: number;
  /** Execution providers, threads, profiling. */
  session?: SessionOptions;
}

export interface ExitResult {
  name: string;
  /** Samples this exit classified correctly (top-1). */
  correct: number;
  count: number;
  accuracy: number;
}

export interface OracleDistribution {
  /** shares[k]: fraction of samples whose cheapest correct exit is k. */
  shares: number[];
  counts: number[];
  /** Fraction of samples no exit gets right. */
  none: number;
  noneCount: number;
}

/** Per-sample results, row-major [sample][exit], for statistics this module does not compute. */
export interface SampleResults {
  exits: number;
  /** 1 when exit k predicted the label of sample i: correct[i * exits + k]. */
  correct: Uint8Array;
  /** Top-1 class of exit k for sample i. */
  predictions: Int32Array;
  /** Softmax probability of that top-1 class (what confidence thresholds are set on). */
  confidence: Float32Array;
  labels: Int32Array;
  /** Where sample i came from: its index in the IDX split, or its image file. */
  source: (number | string)[];
}

export interface EvaluationResult {
  model: string;
  /** Human-readable dataset description (path and split). */
  dataset: string;
  /** Samples evaluated (skipped images excluded). */
  count: number;
  classes: readonly string[];
  exits: ExitResult[];
  oracle: OracleDistribution;
  samples: SampleResults;
  /** Images that could not be read; they are not part of `count`. */
  skipped: { source: string; error: string }[];
  durationMs: number;
}

interface Batch {
  tensor: TensorData;
  labels: number[];
  sources: (number | string)[];
  attempted: number;
  skipped: { source: string; error: string }[];
}

function evenlySpaced(total: number, limit: number | undefined): number[] {
  if (limit === undefined || limit >= total) return Array.from({ length: total }, (_, i) => i);
  return Array.from({ length: limit }, (_, i) => Math.floor((i * total) / limit));
}

function modelName(model: string | Uint8Array): string {
  return typeof model === 'string' ? model : '<model bytes>';
}

/** Evaluate every exit of `model` on `data`. */
export async function evaluateModel(options: EvaluateOptions): Promise<EvaluationResult> {
  const started = performance.now();
  const spec = options.preprocess;
  const batchSize = options.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InputError(`batchSize: expected a positive integer, got ${batchSize}`);
  if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 1)) {
    throw new InputError(`limit: expected a positive integer, got ${options.limit}`);
  }
  const [h, w] = spec.size;
  const c = channelsOf(spec.colorspace);
  const per = c * h * w;

  // Dataset → a list of sample ids and a function that builds one batch from a slice of them.
  let total: number;
  let classes: readonly string[];
  let dataset: string;
  let makeBatch: (start: number, end: number) => Promise<Batch>;

  if (options.data.kind === 'idx') {
    const fm = await loadFashionMnist(options.data.split, options.data.dir);
    const { images, labels } = fm;
    if (spec.colorspace !== 'gray' || images.rows !== h || images.cols !== w) {
      throw new UnsupportedError(
        formatProblem({
          where: fm.imagesFile,
          message: 'IDX images do not fit the model input (IDX data is not resized)',
          expected: `${w}×${h} ${spec.colorspace} as the model's preprocess says`,
          got: `${images.cols}×${images.rows} gray`,
          fix: 'evaluate this model on an ImageFolder dataset instead',
        }),
      );
    }
    // By name, not by position: the model's labels may be in any order.
    const toModel = options.labels ? fashionMnistLabelMap(options.labels, modelName(options.model)) : undefined;
    classes = options.labels ?? fm.classes;
    dataset = `${fm.imagesFile} (${fm.split})`;
    total = Math.min(images.count, options.limit ?? images.count);
    const plane = images.rows * images.cols;
    makeBatch = async (start, end) => {
      const n = end - start;
      const data = new Float32Array(n * per);
      const lab: number[] = [];
      const src: number[] = [];
      for (let i = start; i < end; i++) {
        // A view, not a copy: IDX pixels are already the gray HWC bytes toTensor wants.
        const px = { data: images.pixels.subarray(i * plane, (i + 1) * plane), width: images.cols, height: images.rows, channels: 1 };
        toTensorInto(px, spec, data, (i - start) * per, `${fm.imagesFile}#${i}`);
        lab.push(toModel ? toModel[labels[i]!]! : labels[i]!);
        src.push(i);
      }
      return { tensor: { data, dims: [n, c, h, w] }, labels: lab, sources: src, attempted: n, skipped: [] };
    };
  } else {
    const folder = await scanImageFolder(options.data.dir, options.labels ? { labels: options.labels } : {});
    classes = folder.classes;
    dataset = folder.root;
    const picked = evenlySpaced(folder.items.length, options.limit).map((i) => folder.items[i]!);
    total = picked.length;
    makeBatch = async (start, end) => {
      const items = picked.slice(start, end);
      const prepared = await prepareBatch(
        items.map((it) => it.file),
        spec,
        // Unset, the spec's own policy applies (stretch when it names none).
        { resize: options.resize, concurrency: options.concurrency },
      );
      return {
        tensor: prepared.tensor,
        labels: prepared.indices.map((k) => items[k]!.label),
        sources: prepared.indices.map((k) => items[k]!.file),
        attempted: items.length,
        skipped: prepared.failures.map((f) => ({ source: items[f.index]!.file, error: f.error.message })),
      };
    };
  }

  const session = await createSession(options.model, options.session ?? {});
  try {
    const exitNames = options.exits ? [...options.exits] : [...session.outputNames];
    const missing = exitNames.filter((n) => !session.outputNames.includes(n));
    if (missing.length > 0 || exitNames.length === 0) {
      throw new InputError(
        `${session.source}: exits ${missing.join(', ') || '(none)'} not among the model outputs (${session.outputNames.join(', ')})`,
      );
    }
    if (session.inputNames.length !== 1) {
      throw new UnsupportedError(
        `${session.source}: expected one image input, the model has ${session.inputNames.length} (${session.inputNames.join(', ')})`,
      );
    }
    const inputName = session.inputNames[0]!;
    const E = exitNames.length;

    const correct = new Uint8Array(total * E);
    const predictions = new Int32Array(total * E);
    const confidence = new Float32Array(total * E);
    const sampleLabels = new Int32Array(total);
    const source: (number | string)[] = [];
    const skipped: EvaluationResult['skipped'] = [];
    let count = 0;
    let done = 0;
    let numClasses: number | undefined;

    // Prefetch: decode batch k+1 (sharp runs on libuv's pool) while the model runs batch k.
    const starts: number[] = [];
    for (let s = 0; s < total; s += batchSize) starts.push(s);
    let pending: Promise<Batch> | undefined = starts.length > 0 ? makeBatch(0, Math.min(batchSize, total)) : undefined;
    for (let b = 0; b < starts.length; b++) {
      const batch = await pending!;
      const ns = starts[b + 1];
      pending = ns !== undefined ? makeBatch(ns, Math.min(ns + batchSize, total)) : undefined;
      // Keep a failed prefetch from becoming an unhandled rejection while this batch runs.
      pending?.catch(() => undefined);

      skipped.push(...batch.skipped);
      const n = batch.labels.length;
      if (n > 0) {
        const out = await session.run({ [inputName]: batch.tensor }, exitNames);
        for (let k = 0; k < E; k++) {
          const name = exitNames[k]!;
          const logits = asFloat32(out[name]!, `${session.source}: output '${name}'`);
          const width = logits.dims.length === 2 && logits.dims[0] === n ? logits.dims[1]! : -1;
          if (width < 1 || logits.data.length !== n * width) {
            throw new UnsupportedError(
              `${session.source}: output '${name}' has dims [${logits.dims.join(',')}], expected [${n}, classes] logits`,
            );
          }
          if (numClasses === undefined) {
            numClasses = width;
            if (options.labels && options.labels.length !== width) {
              throw new InputError(
                `${session.source}: ${options.labels.length} labels given but output '${name}' has ${width} classes`,
              );
            }
            if (options.data.kind === 'imagefolder' && classes.length > width) {
              throw new InputError(`${dataset}: ${classes.length} classes but the model outputs ${width} logits`);
            }
          } else if (width !== numClasses) {
            throw new UnsupportedError(`${session.source}: output '${name}' has ${width} classes, '${exitNames[0]}' has ${numClasses}`);
          }
          for (let i = 0; i < n; i++) {
            const row = logits.data.subarray(i * width, (i + 1) * width);
            let best = 0;
            let max = row[0]!;
            for (let j = 1; j < width; j++) {
              if (row[j]! > max) {
                max = row[j]!;
                best = j;
              }
            }
            let z = 0;
            for (let j = 0; j < width; j++) z += Math.exp(row[j]! - max);
            const at = (count + i) * E + k;
            predictions[at] = best;
            confidence[at] = 1 / z;
            correct[at] = best === batch.labels[i] ? 1 : 0;
          }
        }
        for (let i = 0; i < n; i++) {
          const label = batch.labels[i]!;
          if (label >= numClasses!) {
            throw new InputError(`${dataset}: sample ${String(batch.sources[i])} has label ${label} but the model outputs ${numClasses} classes`);
          }
          sampleLabels[count + i] = label;
          source.push(batch.sources[i]!);
        }
        count += n;
      }
      done += batch.attempted;
      options.onProgress?.({ done, total, skipped: skipped.length });
    }

    if (count === 0) {
      throw new InputError(
        `${dataset}: no sample could be evaluated` + (skipped.length > 0 ? ` (${skipped.length} unreadable, first: ${skipped[0]!.error})` : ''),
      );
    }

    const exits: ExitResult[] = exitNames.map((name, k) => {
      let ok = 0;
      for (let i = 0; i < count; i++) ok += correct[i * E + k]!;
      return { name, correct: ok, count, accuracy: ok / count };
    });
    const counts = new Array<number>(E).fill(0);
    let noneCount = 0;
    for (let i = 0; i < count; i++) {
      let k = 0;
      while (k < E && correct[i * E + k] === 0) k++;
      if (k === E) noneCount++;
      else counts[k]!++;
    }
    return {
      model: session.source,
      dataset,
      count,
      classes,
      exits,
      oracle: { shares: counts.map((x) => x / count), counts, none: noneCount / count, noneCount },
      samples: {
        exits: E,
        correct: correct.subarray(0, count * E),
        predictions: predictions.subarray(0, count * E),
        confidence: confidence.subarray(0, count * E),
        labels: sampleLabels.subarray(0, count),
        source,
      },
      skipped,
      durationMs: performance.now() - started,
    };
  } finally {
    await session.close();
  }
}
