// `compile`: float ONNX model (or CBNet folder) + device profile → bundle. The cheap checks that
// need no model come first (options, the output folder, the device profile, the signing key), so
// a mistake costs no model loading and leaves nothing behind; then the model's family plans its
// stages (families/) and the one pipeline compiles and writes them (pipeline.ts).
import { checkBundleTarget } from '../bundle/files.js';
import { loadPrivateKey } from '../bundle/signing.js';
import { loadDeviceProfile } from '../devices/index.js';
import { cbnetFamily, familyOf, type ModelFamily } from './families/index.js';
import { resolvePrecision, validateOptions, type CompileOptions, type CompileResult } from './options.js';
import { compilePlan } from './pipeline.js';

/**
 * Compile a model into a bundle: a multi-exit .onnx file, or a CBNet folder.
 *
 * @example
 * const r = await compileModel({ model: 'models/fmnist-branchy/fmnist-branchy.onnx', device: 'rpi4', out: 'bundles/branchy', precision: 'int8' });
 * console.log(r.manifest.stages.length, r.report.quantization?.keptFloat);
 */
export async function compileModel(opts: CompileOptions): Promise<CompileResult> {
  validateOptions(opts);
  return compileWith(await familyOf(opts.model), opts);
}

/**
 * Compile a CBNet folder (converter.onnx + classifier.onnx); `compileModel` picks this for a folder.
 *
 * @example
 * await compileCbnet({ model: 'models/fmnist-cbnet', device: 'rpi4', out: 'bundles/cbnet', backbone: 'models/fmnist-branchy/fmnist-branchy.onnx' });
 */
export async function compileCbnet(opts: CompileOptions): Promise<CompileResult> {
  validateOptions(opts);
  return compileWith(cbnetFamily, opts);
}

/**
 * One compile with a given family: cheap checks, the family's plan, then the shared pipeline.
 *
 * @example
 * await compileWith(multiExitFamily, { model: 'my-model.onnx', device: 'x86-host', out: 'bundles/mine' });
 */
export async function compileWith(family: ModelFamily, opts: CompileOptions): Promise<CompileResult> {
  await checkBundleTarget(opts.out);
  const device = await loadDeviceProfile(opts.device);
  const precision = resolvePrecision(opts, device);
  const key = opts.key ? await loadPrivateKey(opts.key) : undefined;
  const env = { opts, device, precision, ...(key ? { key } : {}) };
  return compilePlan(await family.plan(env), env);
}
