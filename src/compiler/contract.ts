// The model contract (docs/bring-your-own-model.md) checked at compile time: each exit returns
// logits (the runtime applies its own softmax), exits are listed cheapest first (stage k runs
// before stage k+1, so a costly first exit makes every sample pay for it), and the batch axis is
// dynamic (the runtime batches images). A model that breaks one still compiles and runs, only
// worse, so these are warnings that name the fix; the numbers come from the float model itself.
import type { PlainTensor } from '../backends/onnxruntime.js';
import type { PreprocessSpec } from '../backends/image.js';
import { costPerOutput, type OnnxModel } from '../onnx/index.js';
import { formatProblem } from '../util/errors.js';

export type ContractRule = 'softmax-output' | 'cost-order' | 'static-batch';

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
