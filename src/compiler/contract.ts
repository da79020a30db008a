// The model contract (docs/bring-your-own-model.md) checked at compile time: each exit returns
// logits (the runtime applies its own softmax), exits are listed cheapest first (stage k runs
// before stage k+1, so a costly first exit makes every sample pay for it), and the batch axis is
// dynamic (the runtime batches images). A model that breaks one still compiles and runs, only
// worse, so these are warnings that name the fix; the numbers come from the float model itself.
import type { PlainTensor } from '../backends/onnxruntime.js';
import type { PreprocessSpec } from '../backends/image.js';
import { costPerOutput, type OnnxModel } from '../onnx/index.js';
import { formatProblem } from '../util/errors.js';

export type ContractRule = 'softmax-output' | 'cost-order' | 'static-batch' | 'converter-range';

export interface ContractFinding {
  severity: 'warning' | 'error';
  rule: ContractRule;
  /** One line: where, what was found, and the fix. */
  message: string;
}

/** One exit's float output on sample inputs: rows of class scores. */
export interface ContractSample {
  exit: string;
  dims: readonly number[];
  data: ArrayLike<number>;
}

export interface ContractInput {
  file: string;
  inputName: string;
  /** The input's batch dimension as the model declares it: a number when static. */
  batch: number | string;
  /** The exits in run order with what each needs in total (cumulative MACs). */
  exits: readonly { name: string; cumulativeMacs: number }[];
  /** Float outputs of the exits on sample inputs (random images through the preprocessing). */
  samples: readonly ContractSample[];
}

/** How far a row sum may be from 1 and still read as a probability vector (float32 rounding). */
const SUM_TOLERANCE = 1e-3;

/**
 * Whether every row is non-negative and sums to ~1 — what a softmax output looks like on any input.
 *
 * @example
 * looksLikeProbabilities({ exit: 'e', dims: [1, 3], data: [0.2, 0.3, 0.5] }); // → true
 */
export function looksLikeProbabilities(sample: ContractSample): boolean {
  const classes = sample.dims.at(-1) ?? 0;
  const rows = classes > 0 ? sample.data.length / classes : 0;
  // One class always sums to its own value; nothing to tell.
  if (classes < 2 || rows < 1 || !Number.isInteger(rows)) return false;
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < classes; c++) {
      const v = sample.data[r * classes + c]!;
      if (!(v >= 0)) return false;
      sum += v;
    }
    if (Math.abs(sum - 1) > SUM_TOLERANCE) return false;
  }
  return true;
}

function macs(n: number): string {
  return n.toLocaleString('en-US');
}

/**
 * Check a float model's exits and input against the model contract. Pure: the caller supplies the
 * costs and sample outputs (see {@link contractInputOf}).
 *
 * @example
 * const findings = checkModelContract({ file: 'mynet.onnx', inputName: 'input', batch: 'batch',
 *   exits: [{ name: 'exit0', cumulativeMacs: 1e6 }, { name: 'final', cumulativeMacs: 5e6 }], samples: [] });
 * // → [] (cheapest first, dynamic batch, no samples to judge)
 */
export function checkModelContract(input: ContractInput): ContractFinding[] {
  const out: ContractFinding[] = [];
  for (const s of input.samples) {
    if (!looksLikeProbabilities(s)) continue;
    out.push({
      severity: 'warning',
      rule: 'softmax-output',
      message: formatProblem({
        where: `${input.file}: exit '${s.exit}'`,
        message: 'every row of sample outputs is non-negative and sums to 1, so the exit looks like softmax probabilities;',
        expected: 'logits (the runtime applies its own softmax, so probabilities get squashed to near-uniform confidences)',
        fix: 'return the last layer\'s output before softmax from forward() and export again',
      }),
    });
  }
  for (let k = 0; k + 1 < input.exits.length; k++) {
    const a = input.exits[k]!;
    const b = input.exits[k + 1]!;
    if (a.cumulativeMacs <= b.cumulativeMacs) continue;
    out.push({
      severity: 'warning',
      rule: 'cost-order',
      message: formatProblem({
        where: `${input.file}: exits`,
        message: `exit ${k} '${a.name}' (${macs(a.cumulativeMacs)} MACs) costs more than exit ${k + 1} '${b.name}' (${macs(b.cumulativeMacs)} MACs); exits run in output order, so stage ${k} does the work of both and exit ${k + 1} saves nothing;`,
        expected: 'exits cheapest first',
        fix: 'return the exits from forward() cheapest first (with output_names in that order) and export again, or pass --exits with the cheapest first',
      }),
    });
  }
  if (typeof input.batch === 'number') {
    out.push({
      severity: 'warning',
      rule: 'static-batch',
      message: formatProblem({
        where: `${input.file}: input '${input.inputName}'`,
        message: `has a static batch axis of ${input.batch}, so the bundle runs only batches of exactly ${input.batch} images;`,
        expected: 'a dynamic batch axis',
        fix: `export with torch.onnx.export(..., dynamic_axes={'${input.inputName}': {0: 'batch'}, <each exit>: {0: 'batch'}})`,
      }),
    });
  }
  return out;
}

/**
 * Gather what {@link checkModelContract} needs from the float model: cumulative MACs per exit and
 * the exits' outputs on a few random images (one session on the source bytes).
 *
 * @example
 * const input = await contractInputOf({ model, bytes, file, exits: ['exit0', 'final'], input: { name: 'image' }, preprocess });
 * for (const f of checkModelContract(input)) console.warn(f.message);
 */
export async function contractInputOf(opts: {
  model: OnnxModel;
  bytes: Uint8Array;
  file: string;
  exits: readonly string[];
  input: { name: string; fixedBatch?: number };
  preprocess: PreprocessSpec;
}): Promise<ContractInput> {
  // Loaded here, not at the top: `inspect` uses checkModelContract and should not start onnxruntime.
  const [{ createSession }, { randomImages }] = await Promise.all([import('../backends/onnxruntime.js'), import('./check.js')]);
  const costs = new Map(costPerOutput(opts.model).map((c) => [c.output, c.cumulativeMacs]));
  const batch = opts.input.fixedBatch ?? 4;
  const images = randomImages(opts.preprocess, batch, 11);
  const session = await createSession(opts.bytes);
  let outputs: Record<string, PlainTensor>;
  try {
    outputs = await session.run({ [opts.input.name]: images }, opts.exits);
  } finally {
    await session.close();
  }
  return {
    file: opts.file,
    inputName: opts.input.name,
    batch: opts.input.fixedBatch ?? 'batch',
    exits: opts.exits.map((name) => ({ name, cumulativeMacs: costs.get(name) ?? 0 })),
    samples: opts.exits.flatMap((exit) => {
      const t = outputs[exit];
      return t && t.data instanceof Float32Array ? [{ exit, dims: t.dims, data: t.data }] : [];
    }),
  };
}

/**
 * The contract findings for a model being compiled, as report notes ("warning: …").
 *
 * @example
 * notes.push(...(await contractNotes({ model, bytes, file, exits, input, preprocess })));
 */
export async function contractNotes(opts: Parameters<typeof contractInputOf>[0]): Promise<string[]> {
  return checkModelContract(await contractInputOf(opts)).map((f) => `${f.severity}: ${f.message}`);
}

// ---- CBNet ----

/** Share of converter output values that may fall outside the image range before it reads as unnormalised. */
const OUT_OF_RANGE_SHARE = 0.01;
/** Slack around the preprocessed image range, as a share of its span (a converter need not hit it exactly). */
const RANGE_SLACK = 0.1;

/** What the CBNet contract is checked on: both files, their tensor names and, with --backbone, its exits' costs. */
export interface CbnetContractInput {
  converter: { model: OnnxModel; bytes: Uint8Array; file: string; input: string; output: string };
  classifier: { model: OnnxModel; bytes: Uint8Array; file: string; input: string; exit: string };
  preprocess: PreprocessSpec;
  /** The backbone's deeper exits with what each costs in the backbone (cumulative MACs). */
  backbone?: { file: string; exits: readonly { name: string; cumulativeMacs: number }[] };
}

/**
 * The CBNet contract (docs/bring-your-own-model.md, "A CBNet pair"), checked on random images: the
 * converter returns an image of the input's dims (an error naming the fix, since the classifier
 * reads it as its input), in the range the preprocessing gives (its last step is the same
 * normalisation), the classifier returns logits, and with a backbone the pair costs less than the
 * backbone exit the hybrid falls through to next. Returns the warnings as report notes.
 *
 * @example
 * notes.push(...(await cbnetContractNotes({ converter, classifier, preprocess })));
 */
export async function cbnetContractNotes(c: CbnetContractInput): Promise<string[]> {
  const [{ createSession }, { randomImages }, { UnsupportedError }] = await Promise.all([import('../backends/onnxruntime.js'), import('./check.js'), import('../util/errors.js')]);
  const images = randomImages(c.preprocess, 4, 11);
  const run = async (bytes: Uint8Array, input: string, output: string): Promise<PlainTensor> => {
    const session = await createSession(bytes);
    try {
      return (await session.run({ [input]: images }, [output]))[output]!;
    } finally {
      await session.close();
    }
  };
  const conv = await run(c.converter.bytes, c.converter.input, c.converter.output);
  if (conv.dims.join() !== images.dims.join()) {
    throw new UnsupportedError(
      formatProblem({
        where: `${c.converter.file}: output '${c.converter.output}'`,
        expected: `an image of the input's dims [${images.dims.join(', ')}] (the classifier reads it as its input)`,
        got: `[${conv.dims.join(', ')}]`,
        fix: 'make the converter end in an image of the input size (e.g. upsample back to it) and export again',
      }),
    );
  }
  const cls = await run(c.classifier.bytes, c.classifier.input, c.classifier.exit);
  const warnings = checkModelContract({ file: c.classifier.file, inputName: c.classifier.input, batch: 'batch', exits: [], samples: [{ exit: c.classifier.exit, dims: cls.dims, data: cls.data as Float32Array }] });
  const range = converterRangeFinding(c, conv.data as Float32Array);
  if (range) warnings.push(range);
  const order = cbnetCostFinding(c);
  if (order) warnings.push(order);
  return warnings.map((f) => `${f.severity}: ${f.message}`);
}

/** A warning when the converter's outputs fall outside the range preprocessed images take. */
function converterRangeFinding(c: CbnetContractInput, out: Float32Array): ContractFinding | undefined {
  // Pixels 0 and 255 through the preprocessing, over every channel: the range any image takes.
  const { scale, mean, std } = c.preprocess;
  const ends = mean.flatMap((m, k) => [0, 255 * scale].map((p) => (p - m) / (std[k] ?? std[0]!)));
  const lo = Math.min(...ends);
  const hi = Math.max(...ends);
  const slack = (hi - lo) * RANGE_SLACK;
  let outside = 0;
  let oLo = Infinity;
  let oHi = -Infinity;
  for (const v of out) {
    [oLo, oHi] = [Math.min(oLo, v), Math.max(oHi, v)];
    if (!(v >= lo - slack && v <= hi + slack)) outside++;
  }
  const share = out.length ? outside / out.length : 0;
  if (share <= OUT_OF_RANGE_SHARE) return undefined;
  const f = (x: number): string => x.toPrecision(3);
  return {
    severity: 'warning',
    rule: 'converter-range',
    message: formatProblem({
      where: `${c.converter.file}: output '${c.converter.output}'`,
      message: `${(share * 100).toFixed(1)}% of its values on random images lie outside [${f(lo)}, ${f(hi)}], the range preprocessed images take (got [${f(oLo)}, ${f(oHi)}]); the classifier reads it as a preprocessed image;`,
      expected: 'a converted image normalised like the input (the preprocessing\'s scale, then (x − mean)/std)',
      fix: 'end the converter with the same normalisation as the preprocessing (e.g. sigmoid, then (x − mean)/std) and export again',
    }),
  };
}

/** With --backbone: a warning when the pair costs more than the backbone exit the hybrid tries after it. */
function cbnetCostFinding(c: CbnetContractInput): ContractFinding | undefined {
  const next = c.backbone?.exits[0];
  if (!next) return undefined;
  const pair = costPerOutput(c.converter.model).reduce((a, x) => Math.max(a, x.cumulativeMacs), 0) + costPerOutput(c.classifier.model).reduce((a, x) => Math.max(a, x.cumulativeMacs), 0);
  if (pair <= next.cumulativeMacs) return undefined;
  return {
    severity: 'warning',
    rule: 'cost-order',
    message: formatProblem({
      where: `${c.backbone!.file}: exit '${next.name}'`,
      message: `converter → classifier (${macs(pair)} MACs) costs more than the backbone's exit '${next.name}' (${macs(next.cumulativeMacs)} MACs), which the hybrid tries after it, so a sample pays for the converter where the backbone would answer for less;`,
      expected: 'the pair cheaper than the backbone exit after the classifier',
      fix: 'use a smaller converter, or compile the backbone alone (a multi-exit bundle) instead of --backbone',
    }),
  };
}
