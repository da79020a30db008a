// Multi-exit bundles: stages run in manifest order, each ending in an exit; a sample leaves at the
// first exit whose score clears its threshold (see cascade.ts). With loadBundle's `fused`, a
// batch of one image under the max-prob metric runs on the stages fused into one If-graph
// instead (model/if-graph.ts): one onnxruntime call, the exit decided inside the graph. A call
// whose thresholds are null (no sample leaves early) runs the stages joined into one session that
// computes the last exit only (model/chain-graph.ts), opened at the first such call: a split
// bundle run to its last exit then does the unsplit model's work, with no stage boundary.
import { performance } from 'node:perf_hooks';
import type { TensorData } from '../../backends/image.js';
import type { ModelSession, PlainTensor } from '../../backends/onnxruntime.js';
import { IF_GRAPH_IO } from '../../model/if-graph.js';
import { InputError, UnsupportedError, formatProblem } from '../../util/errors.js';
import { probsFor, runCascade, type CascadeStage } from '../cascade.js';
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

/**
 * The whole batch through the joined chain; every sample leaves at the last exit, whose stage the
 * batch's time is booked to. Samples carry no per-stage times (stageLatencyMs empty): the stages
 * ran as one, and a 0 for the stages before would be a time nobody measured.
 */
async function runChain(chain: ModelSession, inputName: string, exit: string, batch: TensorData, plan: ExitPlan): Promise<BatchResult> {
  const m = batch.dims[0] ?? 0;
  const K = plan.exitNames.length;
  const t0 = performance.now();
  const out = await chain.run({ [inputName]: batch }, [exit]);
  const ms = performance.now() - t0;
  const logits = out[exit];
  if (!logits || logits.dims.length !== 2 || logits.dims[0] !== m) {
    throw new UnsupportedError(`joined stages: exit '${exit}' has dims [${logits?.dims.join(',') ?? ''}], expected [${m}, classes]`);
  }
  const c = logits.dims[1]!;
  const probs = probsFor(c);
  const stageMs = plan.exitNames.map((_, k) => (k === K - 1 ? ms : 0));
  const samples: BatchResult['samples'] = new Array(m);
  const stageLatencyMs: number[] = [];
  for (let r = 0; r < m; r++) {
    const score = scoreRow(plan.policy.policy, logits.data as ArrayLike<number>, r * c, c, plan.policy.temperatures[K - 1]!, probs);
    samples[r] = { classIndex: scored.classIndex, confidence: scored.confidence, score, exit: K - 1, stageLatencyMs, latencyMs: ms };
  }
  return { samples, stageMs, totalMs: ms, overheadMs: 0 };
}

function build({ source, manifest, sessions, fused, openChain }: FamilyContext): FamilyRunner {
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
  const lastExit = exitNames[exitNames.length - 1]!;
  // Opened once, at the first call that needs it, and run once on a blank image right away so
  // that onnxruntime's first-run planning does not land on a real image.
  let chain: Promise<ModelSession | undefined> | undefined;
  const chainFor = (blank: TensorData): Promise<ModelSession | undefined> =>
    (chain ??= (async () => {
      const s = await openChain!();
      if (s) await s.run({ [inputName]: { data: new Float32Array(blank.data.length / (blank.dims[0] || 1)), dims: [1, ...blank.dims.slice(1)] } }, [lastExit]);
      return s;
    })());
  const runBatch = async (batch: TensorData, plan: ExitPlan): Promise<BatchResult> => {
    if (plan.policy.thresholds === null && openChain && stages.length > 1) {
      const s = await chainFor(batch);
      if (s) return runChain(s, inputName, lastExit, batch, plan);
    }
    return fused && batch.dims[0] === 1 && plan.policy.policy.metric === 'max-prob' ? runFused(fused, inputName, batch, plan) : runCascade(stages, inputName, batch, plan.policy);
  };
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
    runBatch,
    async warmup(blank) {
      const plan = { policy: resolveExitPolicy('max-prob', null, exitNames.map(() => 1), exitNames), exitNames };
      await runCascade(stages, inputName, blank, plan.policy);
      if (fused) await runFused(fused, inputName, blank, plan);
      // A bundle without thresholds runs every call to the last exit: open the chain now.
      if (manifest.exitPolicy.thresholds === null && openChain && stages.length > 1) await chainFor(blank);
    },
    async close() {
      const s = await chain?.catch(() => undefined);
      await s?.close();
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
