// Multi-exit bundles: stages run in manifest order, each ending in an exit; a sample leaves at the
// first exit whose score clears its threshold (see cascade.ts).
import { InputError, formatProblem } from '../../util/errors.js';
import { runCascade, type CascadeStage } from '../cascade.js';
import { CBNET_POLICIES } from '../cbnet-cascade.js';
import { resolveExitPolicy } from '../exit-policy.js';
import { resolvePlanPolicy, type ExitPlan, type FamilyContext, type FamilyRunner, type RunnerFamily } from './family.js';

function build({ source, manifest, sessions }: FamilyContext): FamilyRunner {
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
    runBatch: (batch, plan) => runCascade(stages, inputName, batch, plan.policy),
    async warmup(blank) {
      await runCascade(stages, inputName, blank, resolveExitPolicy('max-prob', null, exitNames.map(() => 1), exitNames));
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
