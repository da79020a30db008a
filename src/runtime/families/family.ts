// What a model family gives the bundle runner. The runner does what every bundle needs (verify,
// open one session per stage, check class counts, warm up, decode images, batch, collect
// predictions and timings); a family knows only how its stages run: which options it accepts,
// how a call's options become an exit plan, and how one batch goes through its stages.
//
// Adding a family (a third manifest kind): write a RunnerFamily next to multi-exit.ts and
// cbnet.ts and list it in registry.ts; the registry's type refuses to compile until every
// manifest kind has one.
import type { Manifest } from '../../bundle/manifest.js';
import type { TensorData } from '../../backends/image.js';
import type { ModelSession } from '../../backends/onnxruntime.js';
import { InputError } from '../../util/errors.js';
import type { CascadeSample } from '../cascade.js';
import type { CbnetPolicy, CbnetRun, CbnetRunName } from '../cbnet-cascade.js';
import { EXIT_POLICIES, resolveExitPolicy, type ResolvedExitPolicy } from '../exit-policy.js';
import type { ClassifyOptions } from '../types.js';

/** A call's options resolved and checked against the bundle; kept across calls (see classify.ts). */
export interface ExitPlan {
  policy: ResolvedExitPolicy;
  /** Name of each exit, in run order. */
  exitNames: readonly string[];
  /** The named run order used, for families that have them (reported as ClassifyResult.policy, with timing.runs). */
  runOrder?: CbnetPolicy;
}

/** One batch through a family's stages, timed by manifest stage. */
export interface BatchResult {
  /** One per input row, in row order; `exit` indexes the plan's exitNames. */
  samples: (CascadeSample & { runs?: CbnetRunName[] })[];
  /** Run time of each manifest stage in this batch (0 when no row reached it). */
  stageMs: number[];
  totalMs: number;
  overheadMs: number;
  /** Families with run orders: each model run of the batch, in order. */
  runs?: CbnetRun[];
}

/** A family's runner over one bundle's open sessions. */
export interface FamilyRunner<P extends ExitPlan = ExitPlan> {
  /** Resolve and check a call's exit options (policy, thresholds, metric, temperatures). */
  plan(options: ClassifyOptions): P;
  /** Run one batch (dim 0 = samples, already preprocessed). */
  runBatch(batch: TensorData, plan: P): Promise<BatchResult>;
  /** Run every stage once on `blank` ([1, c, h, w] zeros), so that onnxruntime plans before the first real image. */
  warmup(blank: TensorData): Promise<void>;
  /** Close the sessions the runner opened itself (the stage sessions are the bundle runner's). */
  close?(): Promise<void>;
}

/** What a family's runner is built from. */
export interface FamilyContext {
  /** The bundle path, for error messages. */
  source: string;
  manifest: Manifest;
  /** One per manifest stage, in manifest order. */
  sessions: readonly ModelSession[];
  /** Multi-exit only, when loadBundle's `fused`: the stages as one batch-1 If-graph (model/if-graph.ts). */
  fused?: ModelSession;
  /**
   * Multi-exit only, unless loadBundle's `chain` is false: opens the stages joined into one
   * session that computes the last exit (model/chain-graph.ts), or gives undefined (having said
   * why in one line) when they cannot be joined. Called at most once, on first need.
   */
  openChain?: () => Promise<ModelSession | undefined>;
}

/** A model family as the runtime sees it: checks on its manifest, and how its runner is built. */
export interface RunnerFamily {
  readonly kind: Manifest['kind'];
  /** Refuse a manifest this family cannot run, before any session opens. */
  check(manifest: Manifest, source: string): void;
  /** Stages whose exit is class logits (their class count must match the labels). */
  logitStages(manifest: Manifest): readonly number[];
  build(ctx: FamilyContext): FamilyRunner;
}

/** The exits a plan covers and the manifest's numbers for them, before the call's options apply. */
export interface PlanDefaults {
  exitNames: readonly string[];
  thresholds: readonly number[] | null;
  temperatures: readonly number[];
}

/**
 * The rules every family shares: the call's metric, thresholds and temperatures over the
 * family's defaults. A metric other than the manifest's needs its own thresholds, since the
 * manifest's were calibrated for its metric.
 */
export function resolvePlanPolicy(manifest: Manifest, o: ClassifyOptions, d: PlanDefaults): ResolvedExitPolicy {
  const metric = o.metric ?? manifest.exitPolicy.metric;
  if (metric !== manifest.exitPolicy.metric && o.thresholds === undefined && d.thresholds !== null) {
    throw new InputError(
      `metric ${metric}: the bundle's thresholds were calibrated for ${manifest.exitPolicy.metric}; give thresholds for ${metric} (${EXIT_POLICIES[metric].summary}), or null to run to the last exit`,
    );
  }
  const thresholds = o.thresholds === undefined ? d.thresholds : o.thresholds;
  return resolveExitPolicy(metric, thresholds, o.temperatures ?? d.temperatures, d.exitNames);
}
