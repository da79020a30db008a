// Multi-exit bundles: stages run in manifest order, each ending in an exit; a sample leaves at the
// first exit whose score clears its threshold (see cascade.ts). With loadBundle's `fused`, a
// batch of one image under the max-prob metric runs on the stages fused into one If-graph
// instead (model/if-graph.ts): one onnxruntime call, the exit decided inside the graph.
import { performance } from 'node:perf_hooks';
import type { TensorData } from '../../backends/image.js';
import type { ModelSession, PlainTensor } from '../../backends/onnxruntime.js';
import { IF_GRAPH_IO } from '../../model/if-graph.js';
import { InputError, UnsupportedError, formatProblem } from '../../util/errors.js';
import { runCascade, type CascadeStage } from '../cascade.js';
import { CBNET_POLICIES } from '../cbnet-cascade.js';
import { resolveExitPolicy, scored, scoreRow } from '../exit-policy.js';
import { resolvePlanPolicy, type BatchResult, type ExitPlan, type FamilyContext, type FamilyRunner, type RunnerFamily } from './family.js';

// A max-prob score is at most 1, so this threshold is never cleared: "run to the last exit".
const NEVER = 2;
const FUSED_FETCHES = [IF_GRAPH_IO.logits, IF_GRAPH_IO.exit] as const;

/** The fused graph's feeds for a plan (thresholds, temperatures; the image is set per call), made once per plan (plans are kept across calls). */
const FUSED_FEEDS = new WeakMap<ExitPlan, Record<string, PlainTensor>>();
function fusedFeeds(plan: ExitPlan): Record<string, PlainTensor> {
  let f = FUSED_FEEDS.get(plan);
  if (!f) {
    const K = plan.exitNames.length;
    const t = plan.policy.thresholds;
    const thresholds = Float32Array.from({ length: K - 1 }, (_, k) => (t === null ? NEVER : t[k]!));
    FUSED_FEEDS.set(plan, (f = { [IF_GRAPH_IO.thresholds]: { data: thresholds, dims: [K - 1] }, [IF_GRAPH_IO.temperatures]: { data: Float32Array.from(plan.policy.temperatures), dims: [K] } }));
  }
  return f;
}

// Scratch softmax rows by class count (single-threaded; nothing awaits while one is in use).
const PROBS = new Map<number, Float64Array>();
function probsFor(c: number): Float64Array {
  let p = PROBS.get(c);
  if (!p) PROBS.set(c, (p = new Float64Array(c)));
  return p;
}

/** One image through the fused If-graph; its time is booked to the stage of the exit taken. */
async function runFused(fused: ModelSession, inputName: string, image: TensorData, plan: ExitPlan): Promise<BatchResult> {
  const feeds = fusedFeeds(plan);
  feeds[inputName] = image;
  const t0 = performance.now();
  const out = await fused.run(feeds, FUSED_FETCHES);
  const ms = performance.now() - t0;
  const logits = out[IF_GRAPH_IO.logits]!;
  const exit = Number((out[IF_GRAPH_IO.exit]!.data as BigInt64Array)[0]);
  const c = logits.dims[1]!;
  if (!(exit >= 0 && exit < plan.exitNames.length)) throw new UnsupportedError(`fused graph: exit index ${exit} out of range 0..${plan.exitNames.length - 1}`);
  // The confidence reported is computed as the staged path computes it (double precision).
  const score = scoreRow(plan.policy.policy, logits.data as Float32Array, 0, c, plan.policy.temperatures[exit]!, probsFor(c));
  const stageMs = plan.exitNames.map((_, k) => (k === exit ? ms : 0));
  return {
    samples: [{ classIndex: scored.classIndex, confidence: scored.confidence, score, exit, stageLatencyMs: stageMs.slice(0, exit + 1), latencyMs: ms }],
    stageMs,
    totalMs: ms,
    overheadMs: 0,
  };
}

function build({ source, manifest, sessions, fused }: FamilyContext): FamilyRunner {
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
      fused && batch.dims[0] === 1 && plan.policy.policy.metric === 'max-prob' ? runFused(fused, inputName, batch, plan) : runCascade(stages, inputName, batch, plan.policy),
    async warmup(blank) {
      const plan = { policy: resolveExitPolicy('max-prob', null, exitNames.map(() => 1), exitNames), exitNames };
      await runCascade(stages, inputName, blank, plan.policy);
      if (fused) await runFused(fused, inputName, blank, plan);
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
