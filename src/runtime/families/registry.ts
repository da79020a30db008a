// The runtime's model families, by manifest kind. Keyed by the manifest schema's kinds, so a kind
// added there does not compile until it has a runner here.
import type { Manifest } from '../../bundle/manifest.js';
import { UnsupportedError, formatProblem, show } from '../../util/errors.js';
import { cbnetFamily } from './cbnet.js';
import type { RunnerFamily } from './family.js';
import { multiExitFamily } from './multi-exit.js';

const FAMILIES: Readonly<Record<Manifest['kind'], RunnerFamily>> = {
  'multi-exit': multiExitFamily,
  cbnet: cbnetFamily,
};

/** Manifest kinds this runtime can run. */
export const RUNNER_KINDS = Object.keys(FAMILIES) as readonly Manifest['kind'][];

/**
 * The family that runs bundles of manifest kind `kind`; throws UnsupportedError naming the kind
 * and the supported ones for any other (a bundle from a newer compiler, say).
 *
 * @example
 * ```ts
 * const family = runnerFamily(manifest.kind);
 * const runner = family.build({ source: 'bundles/fmnist-cbnet', manifest, sessions });
 * ```
 */
export function runnerFamily(kind: string, source?: string): RunnerFamily {
  const family = Object.hasOwn(FAMILIES, kind) ? FAMILIES[kind as Manifest['kind']] : undefined;
  if (!family) {
    throw new UnsupportedError(
      formatProblem({
        where: source === undefined ? 'manifest.json kind' : `${source}: manifest.json kind`,
        expected: `a kind this runtime runs (one of: ${RUNNER_KINDS.join(', ')})`,
        got: show(kind),
        fix: 'run it with the edgeexit version that compiled it, or recompile it with this one',
      }),
    );
  }
  return family;
}
