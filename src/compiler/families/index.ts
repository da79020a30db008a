// The model families the compiler knows, as data: the first whose `matches` accepts the model
// path plans it. A third family (a new architecture) is one more module and one more entry here.
import type { ModelFamily } from './family.js';
import { cbnetFamily } from './cbnet.js';
import { multiExitFamily } from './multi-exit.js';

/**
 * In the order they are tried: a folder is a CBNet, any other path a multi-exit model.
 *
 * @example
 * console.log(FAMILIES.map((f) => f.name)); // ['cbnet', 'multi-exit']
 */
export const FAMILIES: readonly ModelFamily[] = [cbnetFamily, multiExitFamily];

/**
 * The family that compiles `model`.
 *
 * @example
 * const family = await familyOf('models/fmnist-cbnet'); // cbnetFamily
 */
export async function familyOf(model: string): Promise<ModelFamily> {
  for (const f of FAMILIES) if (await f.matches(model)) return f;
  // multiExitFamily accepts every path that is not a folder; a missing file fails when it is read.
  return multiExitFamily;
}

export { cbnetFamily, isCbnetFolder, CBNET_FILES } from './cbnet.js';
export { multiExitFamily } from './multi-exit.js';
export type { ModelFamily, FamilyPlan, StagesPlan, CompileEnv, PlannedStage, CheckGroup, Extension } from './family.js';
