// CBNet bundles: a converter stage and a light classifier stage (and, optionally, the deeper
// stages of the multi-exit backbone the classifier came from), run in the order of a named
// policy (see cbnet-cascade.ts; exit numbering: see ../types.ts).
import type { CbnetExitPoint, CbnetPipeline, Manifest } from '../../bundle/manifest.js';
import { asFloat32, type PlainTensor } from '../../backends/onnxruntime.js';
import { InputError, UnsupportedError, formatProblem, show } from '../../util/errors.js';
import { CBNET_POLICIES, runCbnetBatch, type BackboneStage, type CbnetModels, type CbnetPolicy } from '../cbnet-cascade.js';
import { resolveExitPolicy } from '../exit-policy.js';
import type { ClassifyOptions } from '../types.js';
import { resolvePlanPolicy, type ExitPlan, type FamilyContext, type FamilyRunner, type PlanDefaults, type RunnerFamily } from './family.js';

interface CbnetPlan extends ExitPlan {
  runOrder: CbnetPolicy;
  order: readonly CbnetExitPoint[];
}

function pipelineOf(manifest: Manifest, source: string): CbnetPipeline {
  if (!manifest.pipeline) throw new UnsupportedError(`${source}: cbnet bundle without a pipeline section`);
  return manifest.pipeline;
}

/** The sessions as the CBNet run order calls them. */
function modelsOf({ manifest, sessions }: FamilyContext, pipeline: CbnetPipeline): CbnetModels {
  const { converter, classifier } = pipeline;
  const backboneStage = (k: number): readonly [string, BackboneStage] => {
    const st = manifest.stages[k]!;
    return [st.exit, { inputs: st.inputs, exit: st.exit, carry: st.carry, run: (feeds, outs) => sessions[k]!.run(feeds, outs) as Promise<Record<string, PlainTensor>> }];
  };
  return {
    convert: async (image) => {
      const out = await sessions[converter.stage]!.run({ [converter.input]: image }, [converter.output]);
      return asFloat32(out[converter.output]!, converter.output);
    },
    classify: async (x) => {
      const out = await sessions[classifier.stage]!.run({ [classifier.input]: x }, [classifier.exit]);
      return out[classifier.exit]! as PlainTensor;
    },
    ...(pipeline.backbone ? { backbone: { inputName: manifest.input.name, stages: new Map(pipeline.backbone.map(backboneStage)) } } : {}),
  };
}

/** The exits of the chosen policy and the manifest's numbers for them (the manifest's count the hybrid's exit points). */
function policyDefaults(manifest: Manifest, pipeline: CbnetPipeline, name: CbnetPolicy): PlanDefaults {
  if (name === 'hybrid') return { exitNames: [...pipeline.policies.hybrid], thresholds: manifest.exitPolicy.thresholds, temperatures: manifest.exitPolicy.temperatures };
  // cbnet has one exit point, which never needs a threshold.
  const at = pipeline.policies.hybrid.indexOf('classifier<-converter');
  return { exitNames: [...pipeline.policies.cbnet], thresholds: null, temperatures: [at >= 0 ? manifest.exitPolicy.temperatures[at]! : 1] };
}

function planFor(manifest: Manifest, pipeline: CbnetPipeline, o: ClassifyOptions): CbnetPlan {
  if (o.policy !== undefined && !(CBNET_POLICIES as readonly string[]).includes(o.policy)) {
    throw new InputError(formatProblem({ where: 'policy', expected: `one of: ${CBNET_POLICIES.join(', ')}`, got: show(o.policy) }));
  }
  const name = o.policy ?? pipeline.default;
  if (name === 'cbnet' && o.thresholds != null && o.thresholds.length > 0) {
    throw new InputError(
      formatProblem({
        where: 'thresholds',
        message: `policy cbnet has one exit point (classifier<-converter), which always answers; thresholds apply to policy hybrid (${pipeline.policies.hybrid.join(', ')})`,
        got: show(o.thresholds),
        fix: "run policy 'hybrid' (--policy hybrid), or give no thresholds",
      }),
    );
  }
  const defaults = policyDefaults(manifest, pipeline, name);
  const order = name === 'cbnet' ? pipeline.policies.cbnet : pipeline.policies.hybrid;
  return { policy: resolvePlanPolicy(manifest, o, defaults), exitNames: defaults.exitNames, runOrder: name, order };
}

function build(ctx: FamilyContext): FamilyRunner<CbnetPlan> {
  const { manifest } = ctx;
  const pipeline = pipelineOf(manifest, ctx.source);
  const models = modelsOf(ctx, pipeline);
  /** Manifest stage of each kind of run, for timing.stageMs (both classifier runs count for its stage). */
  const stageOfRun = (name: string): number => {
    if (name === 'converter') return pipeline.converter.stage;
    if (name.startsWith('backbone:')) return pipeline.backbone!.find((k) => `backbone:${manifest.stages[k]!.exit}` === name)!;
    return pipeline.classifier.stage;
  };
  return {
    plan: (o) => planFor(manifest, pipeline, o),
    async runBatch(batch, plan) {
      const r = await runCbnetBatch(models, plan.order, batch, plan.policy);
      const stageMs = manifest.stages.map(() => 0);
      for (const run of r.runs) stageMs[stageOfRun(run.name)]! += run.ms;
      return { samples: r.samples, stageMs, totalMs: r.totalMs, overheadMs: r.overheadMs, runs: r.runs };
    },
    async warmup(blank) {
      // Threshold 0 lets the sample leave at the image exit point, so run the converter path too.
      await models.classify(blank);
      await runCbnetBatch(models, ['classifier<-converter'], blank, resolveExitPolicy('max-prob', null, [1], ['classifier<-converter']));
      const deep = pipeline.policies.hybrid.filter((p) => p.startsWith('backbone:'));
      if (deep.length) await runCbnetBatch(models, deep, blank, resolveExitPolicy('max-prob', null, deep.map(() => 1), deep));
    },
  };
}

/** The runtime's CBNet family (manifest kind 'cbnet'). */
export const cbnetFamily: RunnerFamily = {
  kind: 'cbnet',
  check: (manifest, source) => void pipelineOf(manifest, source),
  // The converter's "exit" is an image, not logits.
  logitStages: (manifest) => [manifest.pipeline!.classifier.stage],
  build,
};
