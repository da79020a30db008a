// Multi-exit bundles: stages run in manifest order, each ending in an exit; a sample leaves at the
// first exit whose score clears its threshold (see cascade.ts). With loadBundle's `fused`, a
// batch of one image under the max-prob metric runs on the stages fused into one If-graph
// instead (model/if-graph.ts): one onnxruntime call, the exit decided inside the graph.
import { performance } from 'node:perf_hooks';
import type { TensorData } from '../../backends/image.js';
import type { ModelSession, PlainTensor } from '../../backends/onnxruntime.js';
import { IF_GRAPH_IO, ifGraphInputs } from '../../model/if-graph.js';
import { InputError, UnsupportedError, formatProblem } from '../../util/errors.js';
import { runCascade, type CascadeStage } from '../cascade.js';
import { CBNET_POLICIES } from '../cbnet-cascade.js';
import { clears, resolveExitPolicy, scored, scoreRow } from '../exit-policy.js';
import { resolvePlanPolicy, type BatchResult, type ExitPlan, type FamilyContext, type FamilyRunner, type RunnerFamily } from './family.js';

// A max-prob score is at most 1, so this threshold is never cleared: "run to the last exit".
const NEVER = 2;
const FUSED_FETCHES = [IF_GRAPH_IO.logits, IF_GRAPH_IO.exit] as const;

/** The fused part of a runner: the If-graph session over stages `from`.., and what it reads. */
interface Fused {
  session: ModelSession;
  from: number;
  /** Its data inputs (the image, or what the stages before `from` hand on). */
  inputs: readonly string[];
  /** Its threshold and temperature feeds per plan, made once (plans are kept across calls); data inputs are set per call. */
  feeds: WeakMap<ExitPlan, Record<string, PlainTensor>>;
}

function fusedFeeds(f: Fused, plan: ExitPlan): Record<string, PlainTensor> {
  let feeds = f.feeds.get(plan);
  if (!feeds) {
    const K = plan.exitNames.length - f.from;
    const t = plan.policy.thresholds;
    const thresholds = Float32Array.from({ length: K - 1 }, (_, k) => (t === null ? NEVER : t[f.from + k]!));
    const temperatures = Float32Array.from(plan.policy.temperatures.slice(f.from));
    f.feeds.set(plan, (feeds = { [IF_GRAPH_IO.thresholds]: { data: thresholds, dims: [K - 1] }, [IF_GRAPH_IO.temperatures]: { data: temperatures, dims: [K] } }));
  }
  return feeds;
}

// Scratch softmax rows by class count (single-threaded; nothing awaits while one is in use).
const PROBS = new Map<number, Float64Array>();
function probsFor(c: number): Float64Array {
  let p = PROBS.get(c);
  if (!p) PROBS.set(c, (p = new Float64Array(c)));
  return p;
}

/**
 * One image: stages before `from` as the cascade runs them (a sample may leave there), then the
 * fused If-graph in one call, whose time is booked to the stage of the exit taken.
 */
async function runFused(f: Fused, stages: readonly CascadeStage[], fetches: readonly (readonly string[])[], inputName: string, image: TensorData, plan: ExitPlan): Promise<BatchResult> {
  const K = plan.exitNames.length;
  const stageMs = new Array<number>(K).fill(0);
  const feeds = fusedFeeds(f, plan);
  const have: Record<string, PlainTensor> = { [inputName]: image };
  const t0 = performance.now();
  let t = t0;
  for (let k = 0; k < f.from; k++) {
    const out = await stages[k]!.run(have, fetches[k]!);
    const now = performance.now();
    stageMs[k] = now - t;
    t = now;
    const logits = out[stages[k]!.exit]!;
    const threshold = plan.policy.thresholds?.[k];
    const score = scoreRow(plan.policy.policy, logits.data as Float32Array, 0, logits.dims[1]!, plan.policy.temperatures[k]!, probsFor(logits.dims[1]!));
    if (threshold !== undefined && clears(plan.policy.policy, score, threshold)) {
      return { samples: [{ classIndex: scored.classIndex, confidence: scored.confidence, score, exit: k, stageLatencyMs: stageMs.slice(0, k + 1), latencyMs: now - t0 }], stageMs, totalMs: now - t0, overheadMs: 0 };
    }
    for (const name of stages[k]!.carry) if (out[name]) have[name] = out[name]!;
  }
  for (const name of f.inputs) feeds[name] = have[name]!;
  const out = await f.session.run(feeds, FUSED_FETCHES);
  const end = performance.now();
  const logits = out[IF_GRAPH_IO.logits]!;
  const exit = Number((out[IF_GRAPH_IO.exit]!.data as BigInt64Array)[0]);
  const c = logits.dims[1]!;
  if (!(exit >= f.from && exit < K)) throw new UnsupportedError(`fused graph: exit index ${exit} out of range ${f.from}..${K - 1}`);
  stageMs[exit] = end - t;
  // The confidence reported is computed as the staged path computes it (double precision).
  const score = scoreRow(plan.policy.policy, logits.data as Float32Array, 0, c, plan.policy.temperatures[exit]!, probsFor(c));
  return {
    samples: [{ classIndex: scored.classIndex, confidence: scored.confidence, score, exit, stageLatencyMs: stageMs.slice(0, exit + 1), latencyMs: end - t0 }],
    stageMs,
    totalMs: end - t0,
    overheadMs: 0,
  };
}

function build({ source, manifest, sessions, fused: fusedCtx }: FamilyContext): FamilyRunner {
  // Built once: the cascade keys its per-stage fetch lists on this array.
  const stages: CascadeStage[] = manifest.stages.map((s, k) => ({
    inputs: s.inputs,
    exit: s.exit,
    carry: s.carry,
    outputs: s.outputs,
    run: (feeds, outputs) => sessions[k]!.run(feeds, outputs),
  }));
  const exitNames = manifest.stages.map((s) => s.exit);
  const inputName = manifest.input.name;
  const fused: Fused | undefined = fusedCtx && { ...fusedCtx, inputs: ifGraphInputs(manifest.stages, fusedCtx.from), feeds: new WeakMap() };
  // What the stages before the fused part fetch: their exit and what they hand on.
  const fetches = stages.map((s) => s.outputs.filter((o) => o === s.exit || s.carry.includes(o)));
  return {
    plan(o): ExitPlan {
      if (o.policy !== undefined) {
        throw new InputError(
          formatProblem({
            where: 'policy',
            message: `only cbnet bundles have run-order policies (${CBNET_POLICIES.join(', ')}); ${source} is a ${manifest.kind} bundle, whose exits run in stage order (${exitNames.join(', ')})`,
            fix: 'leave the policy out; thresholds choose where samples leave',
          }),
        );
      }
      const { thresholds, temperatures } = manifest.exitPolicy;
      return { policy: resolvePlanPolicy(manifest, o, { exitNames, thresholds, temperatures }), exitNames };
    },
    runBatch: (batch, plan) =>
      fused && batch.dims[0] === 1 && plan.policy.policy.metric === 'max-prob' ? runFused(fused, stages, fetches, inputName, batch, plan) : runCascade(stages, inputName, batch, plan.policy),
    async warmup(blank) {
      const plan = { policy: resolveExitPolicy('max-prob', null, exitNames.map(() => 1), exitNames), exitNames };
      await runCascade(stages, inputName, blank, plan.policy);
      if (fused) await runFused(fused, stages, fetches, inputName, blank, plan);
    },
  };
}

/** The runtime's multi-exit family (manifest kind 'multi-exit'). */
export const multiExitFamily: RunnerFamily = {
  kind: 'multi-exit',
  check() {},
  logitStages: (manifest) => manifest.stages.map((_, k) => k),
  build,
};
