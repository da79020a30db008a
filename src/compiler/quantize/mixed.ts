// Verification and mixed precision for quantised stages. The compiled chain and the float chain
// run over the labelled calibration images; per exit we compare top-1 accuracy, agreement and the
// largest logit error. When an exit loses more than the allowed percentage points, each
// quantised node's cost is measured (quantise everything but that node and re-run), the node whose
// quantisation costs most stays float, and the loop repeats until every exit is within budget or
// nothing is left to keep float. Measured, not guessed: sensitivity depends on the data.
// "Exit" is each stage's exit of the chain by default; a model family whose stages feed each
// other in other ways (CBNet) passes a QuantVerifier naming the outputs it is judged on.
import { concatFloat32 } from '../../util/arrays.js';
import { encodeModel, type OnnxModel } from '../../onnx/index.js';
import { createSession, type ModelSession, type PlainTensor, type SessionOptions } from '../../backends/onnxruntime.js';
import type { CalibrationData, StageRanges } from './calibrate.js';
import { quantizeStage, type QuantizeStageReport } from './qdq.js';
import type { QParams, QuantScheme } from './qparams.js';

export interface QuantStage {
  model: OnnxModel;
  inputs: readonly string[];
  exit: string;
  carry: readonly string[];
}

export interface ExitVerification {
  stage: number;
  exit: string;
  samples: number;
  /** Top-1 accuracy (0..1) of the float stages on the labelled images. */
  floatTop1: number;
  compiledTop1: number;
  /** Share of images where float and compiled pick the same class. */
  agreement: number;
  maxLogitError: number;
  /** floatTop1 − compiledTop1 in percentage points. */
  dropPp: number;
}

export interface KeptFloat {
  stage: number;
  node: string;
  op: string;
  reason: string;
}

export interface QuantizeResult {
  models: OnnxModel[];
  reports: QuantizeStageReport[];
  verify: ExitVerification[];
  keptFloat: KeptFloat[];
  /** Whether every exit is within maxDropPp. */
  withinBudget: boolean;
  /** Compiled chains evaluated by the search (1 when int8 fitted at once). */
  evaluations: number;
}

export interface QuantizeOptions {
  scheme: QuantScheme;
  ranges: readonly StageRanges[];
  inputName: string;
  data: Pick<CalibrationData, 'batches' | 'labels'>;
  /** Allowed top-1 loss per exit, percentage points. */
  maxDropPp: number;
  /** Keep sensitive nodes float until within budget (default true). */
  mixed?: boolean;
  session?: SessionOptions;
  onProgress?: (line: string) => void;
  /** What the budget is measured on (default: the stages run as one chain, one output per exit). */
  verifier?: QuantVerifier;
  /**
   * Hand a stage's carried tensors to the next as int8 codes, with the parameters the producing
   * stage fixed at compile time (default true: a chain hands tensors on). Off for stages compiled
   * apart (CBNet's pair).
   */
  carryParams?: boolean;
  /**
   * With carryParams, hand carried tensors over as int8 codes (default true); false hands them
   * over as float, re-quantised by the reader with the same parameters.
   */
  int8HandOver?: boolean;
  /** Stages left float whole (every node kept float from the start, not measured one by one). */
  floatStages?: ReadonlySet<number>;
}

/**
 * The outputs an int8 compile is verified on, when they are not simply one per stage of a chain:
 * a family whose stages feed each other in several ways (CBNet: the classifier on the image, and
 * on the converter's output) names each output with the deepest stage it depends on, and runs them.
 *
 * @example
 * const verifier: QuantVerifier = { outputs: [{ stage: 1, exit: 'classifier<-image' }], run: async (bytes) => [await logitsOf(bytes[1]!)] };
 * await quantizeWithBudget(stages, { ...opts, verifier, carryParams: false });
 */
export interface QuantVerifier {
  outputs: readonly { stage: number; exit: string }[];
  /** Logits of every output, in `outputs` order, concatenated over the calibration batches. */
  run(models: readonly Uint8Array[]): Promise<Float32Array[]>;
}

type Feeds = Record<string, PlainTensor>;

/** Runs stage chains over fixed batches, remembering what each stage received. */
class ChainRunner {
  constructor(
    private readonly stages: readonly QuantStage[],
    private readonly inputName: string,
    private readonly batches: CalibrationData['batches'],
    private readonly session: SessionOptions = {},
  ) {}

  /**
   * Run stages `from`..`to` of `models`, starting from `inputs[from]` (per batch) or the images.
   * Returns every exit's logits (concatenated over batches) and, when `keepInputs`, each
   * stage's per-batch feeds.
   */
  async run(models: readonly Uint8Array[], from = 0, to = models.length - 1, start?: Feeds[][], keepInputs = false): Promise<{ logits: Float32Array[]; inputs: Feeds[][] }> {
    const sessions: ModelSession[] = [];
    const chunks: Float32Array[][] = this.stages.map(() => []);
    const inputs: Feeds[][] = this.stages.map(() => []);
    try {
      for (let k = from; k <= to; k++) sessions[k] = await createSession(models[k]!, { graphOptimizationLevel: 'all', ...this.session });
      for (const [b, batch] of this.batches.entries()) {
        let alive: Feeds = start ? start[from]![b]! : { [this.inputName]: { data: batch.data, dims: batch.dims } };
        for (let k = from; k <= to; k++) {
          const s = this.stages[k]!;
          const feeds: Feeds = {};
          for (const name of s.inputs) feeds[name] = alive[name]!;
          if (keepInputs) inputs[k]!.push(alive);
          const out = await sessions[k]!.run(feeds);
          chunks[k]!.push(out[s.exit]!.data as Float32Array);
          const next: Feeds = {};
          for (const name of s.carry) next[name] = out[name] ?? alive[name]!;
          alive = next;
        }
      }
    } finally {
      await Promise.all(sessions.filter(Boolean).map((s) => s.close()));
    }
    const logits = chunks.map(concatFloat32);
    return { logits, inputs };
  }
}

function argmax(data: Float32Array, row: number, width: number): number {
  let best = 0;
  for (let i = 1; i < width; i++) if (data[row * width + i]! > data[row * width + best]!) best = i;
  return best;
}

export function compareExit(stage: number, exit: string, ref: Float32Array, got: Float32Array, labels: Int32Array): ExitVerification {
  const n = labels.length;
  const width = ref.length / n;
  let fc = 0;
  let cc = 0;
  let agree = 0;
  let maxErr = 0;
  for (let i = 0; i < n; i++) {
    const a = argmax(ref, i, width);
    const b = argmax(got, i, width);
    if (a === labels[i]) fc++;
    if (b === labels[i]) cc++;
    if (a === b) agree++;
  }
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ref[i]! - got[i]!);
    maxErr = Math.max(maxErr, Number.isNaN(d) ? Infinity : d);
  }
  return { stage, exit, samples: n, floatTop1: fc / n, compiledTop1: cc / n, agreement: agree / n, maxLogitError: maxErr, dropPp: ((fc - cc) / n) * 100 };
}

/** Quantise every stage; keep nodes float, measured one at a time, until each verified output is within budget. */
export async function quantizeWithBudget(stages: readonly QuantStage[], opts: QuantizeOptions): Promise<QuantizeResult> {
  const runner = new ChainRunner(stages, opts.inputName, opts.data.batches, opts.session);
  const outputs = opts.verifier?.outputs ?? stages.map((s, k) => ({ stage: k, exit: s.exit }));
  const runAll = async (bytes: readonly Uint8Array[], keepInputs = false) =>
    opts.verifier ? { logits: await opts.verifier.run(bytes), inputs: [] } : runner.run(bytes, 0, stages.length - 1, undefined, keepInputs);
  const ref = (await runAll(stages.map((s) => encodeModel(s.model)))).logits;
  const compare = (logits: readonly Float32Array[], i: number) => compareExit(outputs[i]!.stage, outputs[i]!.exit, ref[i]!, logits[i]!, opts.data.labels);
  const allNodes = (m: OnnxModel) => new Set(m.graph.node.map((n) => n.name));
  const keep = stages.map((s, k) => (opts.floatStages?.has(k) ? allNodes(s.model) : new Set<string>()));
  /** Quantise stages in order, each reusing (when carryParams) the parameters of the tensors earlier stages handed over. */
  const buildAll = (extra?: { stage: number; node: string }) => {
    const carried = new Map<string, QParams>();
    const codes = new Map<string, QParams>();
    return stages.map((s, k) => {
      const keepFloat = extra?.stage === k ? new Set([...keep[k]!, extra.node]) : keep[k]!;
      // A chain hands its carried tensors on as int8 codes; the exit stays float logits.
      const chain =
        opts.carryParams === false ? {} : opts.int8HandOver === false ? { inputParams: carried } : { inputParams: carried, int8Inputs: codes, handOver: new Set(s.carry.filter((t) => t !== s.exit)) };
      const built = quantizeStage(s.model, { scheme: opts.scheme, ranges: opts.ranges[k]!, keepFloat, ...chain });
      for (const [t, p] of built.report.outputParams) carried.set(t, p);
      for (const [t, p] of built.report.int8Outputs) codes.set(t, p);
      return built;
    });
  };
  const keptFloat: KeptFloat[] = [];
  let evaluations = 0;
  for (;;) {
    const built = buildAll();
    const bytes = built.map((b) => encodeModel(b.model));
    const base = await runAll(bytes, true);
    evaluations++;
    const verify = outputs.map((_, i) => compare(base.logits, i));
    const failing = verify.filter((v) => v.dropPp > opts.maxDropPp);
    const result = (): QuantizeResult => ({ models: built.map((b) => b.model), reports: built.map((b) => b.report), verify, keptFloat, withinBudget: failing.length === 0, evaluations });
    if (failing.length === 0 || opts.mixed === false) return result();
    const lastFailing = Math.max(...failing.map((f) => f.stage));
    const excess = (v: readonly ExitVerification[]) => v.reduce((a, x) => a + Math.max(0, x.dropPp - opts.maxDropPp), 0);
    const candidates = built.flatMap((b, k) => (k <= lastFailing ? [...b.report.quantized, ...b.report.passThrough].map((c) => ({ ...c, stage: k })) : []));
    if (candidates.length === 0) return result();
    opts.onProgress?.(`mixed precision: ${failing.map((f) => `${f.exit} −${f.dropPp.toFixed(2)} pp`).join(', ')} over the ${opts.maxDropPp} pp budget; measuring ${candidates.length} node(s)`);
    let best: { c: (typeof candidates)[number]; score: number; after: ExitVerification[] } | undefined;
    for (const c of candidates) {
      const rebuilt = buildAll(c);
      const trial = bytes.map((b, k) => (k >= c.stage && k <= lastFailing ? encodeModel(rebuilt[k]!.model) : b));
      let after: ExitVerification[];
      if (opts.verifier) {
        const logits = await opts.verifier.run(trial);
        after = outputs.map((_, i) => compare(logits, i));
      } else {
        // Everything before the node's stage is unchanged: start from the inputs the baseline fed it.
        const r = await runner.run(trial, c.stage, lastFailing, base.inputs);
        after = verify.map((v, k) => (k >= c.stage && k <= lastFailing ? compare(r.logits, k) : v));
      }
      evaluations++;
      const score = excess(after);
      if (!best || score < best.score) best = { c, score, after };
    }
    const { c, after } = best!;
    keep[c.stage]!.add(c.node);
    const worst = failing.reduce((a, b) => (b.dropPp > a.dropPp ? b : a));
    const afterWorst = after[verify.indexOf(worst)]!;
    keptFloat.push({
      stage: c.stage,
      node: c.node,
      op: c.op,
      reason: `costliest to quantise: with it float, ${worst.exit} drops ${afterWorst.dropPp.toFixed(2)} pp instead of ${worst.dropPp.toFixed(2)} pp (budget ${opts.maxDropPp} pp)`,
    });
    opts.onProgress?.(`mixed precision: keeping '${c.node}' (${c.op}, stage ${c.stage}) float`);
  }
}
