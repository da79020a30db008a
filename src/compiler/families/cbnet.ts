// The CBNet family: a folder with converter.onnx and classifier.onnx → one bundle of kind cbnet
// with two stages, the converter and the light classifier, and a manifest `pipeline` saying which
// feeds which. The runtime may run converter → classifier, or the hybrid: the classifier on the
// raw image first and the converter only when that answer is not confident. So the classifier is
// compiled for two input distributions: its int8 activation ranges are calibrated on raw images
// and converter outputs together, and both paths are what the accuracy budget (and the
// mixed-precision fallback) is measured on. With --backbone, a multi-exit model's deeper stages
// are planned by the multi-exit family and compiled by the same pipeline as the hybrid's last
// fall-through.
import { concatFloat32 } from '../../util/arrays.js';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError, UnsupportedError, type Problem } from '../../util/errors.js';
import { encodeModel, type OnnxModel } from '../../onnx/index.js';
import { createSession, type ModelSession, type PlainTensor } from '../../backends/onnxruntime.js';
import type { PreprocessSpec, TensorData } from '../../backends/image.js';
import { sha256Hex } from '../../bundle/files.js';
import type { CbnetPipeline } from '../../bundle/manifest.js';
import { calibrateStages, type CalibrationData, type QuantVerifier } from '../quantize/index.js';
import { randomImages } from '../check.js';
import { cbnetContractNotes } from '../contract.js';
import { prepareModel, type PrepareReport } from '../prepare.js';
import { splitModel } from '../split.js';
import { checkExitWidths, checkInput, isProblem, labelledImages, readSourceModel, requireDescription, resolveLabels, resolvePreprocess, type SourceModel } from '../inputs.js';
import type { CompileOptions, Precision } from '../options.js';
import type { CompileEnv, Extension, FamilyPlan, ModelFamily, PlannedStage, VerifyResult } from './family.js';
import { planMultiExit } from './multi-exit.js';

/** The files a CBNet folder must hold, by role. */
export const CBNET_FILES = { converter: 'converter.onnx', classifier: 'classifier.onnx' } as const;
const ROLE_META = 'edgeexit.role';
/**
 * The `edgeexit.role` each file of a CBNet folder may carry (a swapped pair is refused).
 *
 * @example
 * model.setMetadata('edgeexit.role', CBNET_ROLES.converter); // 'cbnet-converter'
 */
export const CBNET_ROLES = { converter: 'cbnet-converter', classifier: 'cbnet-classifier' } as const;
const ROLES = CBNET_ROLES;

/**
 * Whether `p` is a folder (a CBNet model) rather than one ONNX file.
 *
 * @example
 * ```ts
 * import { compileCbnet, compileModel, isCbnetFolder } from 'edgeexit/compiler';
 * const compile = (await isCbnetFolder(model)) ? compileCbnet : compileModel;
 * ```
 */
export async function isCbnetFolder(p: string): Promise<boolean> {
  const st = await fsp.stat(p).catch(() => undefined);
  return st?.isDirectory() ?? false;
}

/**
 * The CBNet family: a folder holding converter.onnx and classifier.onnx.
 *
 * @example
 * if (await cbnetFamily.matches('models/fmnist-cbnet')) plan = await cbnetFamily.plan(env);
 */
export const cbnetFamily: ModelFamily = {
  name: 'cbnet',
  matches: isCbnetFolder,
  plan: (env) => planCbnet(env),
};

function cbnetFolderError(dir: string, missing: string[], present: string[]): InputError {
  const expected = `${CBNET_FILES.converter} (image → converted image, same dims) and ${CBNET_FILES.classifier} (image → logits)`;
  return new InputError(
    `${dir}: is a folder but not a CBNet model: missing ${missing.join(' and ')}; a CBNet folder must contain ${expected}` +
      ` (it has: ${present.join(', ') || 'nothing'}); to compile a multi-exit model, pass its .onnx file instead`,
    missing.map((m) => ({ where: path.join(dir, m), message: 'missing', expected, fix: 'export the CBNet pair into this folder (models/zoo/cbnet.py)' })),
  );
}

/** Both files, read once, each saying (if at all) the role its name gives it. */
async function readPair(dir: string): Promise<{ conv: SourceModel; cls: SourceModel; convFile: string; clsFile: string }> {
  const present = (await fsp.readdir(dir)).sort();
  const missing = Object.values(CBNET_FILES).filter((f) => !present.includes(f));
  if (missing.length > 0) throw cbnetFolderError(dir, missing, present);
  const convFile = path.join(dir, CBNET_FILES.converter);
  const clsFile = path.join(dir, CBNET_FILES.classifier);
  const conv = await readSourceModel(convFile);
  const cls = await readSourceModel(clsFile);
  const problems: Problem[] = [];
  for (const [role, m, f] of [['converter', conv.model, convFile], ['classifier', cls.model, clsFile]] as const) {
    const got = m.getMetadata(ROLE_META);
    // Swapped files would compile and then classify garbage; the role metadata catches that.
    if (got !== undefined && got !== ROLES[role]) problems.push({ where: `${f}: metadata ${ROLE_META}`, expected: `'${ROLES[role]}'`, got: `'${got}'`, fix: 'are converter.onnx and classifier.onnx swapped?' });
  }
  if (problems.length) throw new InputError(`${dir}: the CBNet files do not say the roles their names give them`, problems);
  return { conv, cls, convFile, clsFile };
}

function oneOutput(m: OnnxModel, f: string, what: string): string {
  const outs = m.graph.output.map((o) => o.name);
  if (outs.length !== 1) throw new UnsupportedError(`${f}: has ${outs.length} outputs (${outs.join(', ')}); expected exactly one, ${what}`);
  return outs[0]!;
}

/** The image description (from the classifier, which owns the labels, else the converter) and the tensor names. */
async function describePair(dir: string, pair: Awaited<ReturnType<typeof readPair>>, opts: CompileOptions) {
  const { conv, cls, convFile, clsFile } = pair;
  const pre = await resolvePreprocess(cls.model, clsFile, opts.preprocess);
  const preFallback = isProblem(pre) ? await resolvePreprocess(conv.model, convFile, undefined) : pre;
  const d = requireDescription(`${dir}: the CBNet`, preFallback, await resolveLabels(cls.model, clsFile, opts.labels));
  const convIn = checkInput(conv.model, convFile, d.preprocess);
  const clsIn = checkInput(cls.model, clsFile, d.preprocess);
  if (convIn.fixedBatch !== undefined || clsIn.fixedBatch !== undefined) throw new UnsupportedError(`${dir}: a CBNet with a fixed batch size is not supported; export with a dynamic batch dimension`);
  const converted = oneOutput(conv.model, convFile, 'the converted image');
  const exit = oneOutput(cls.model, clsFile, 'the logits');
  checkExitWidths(cls.model, clsFile, [exit], d.labels, d.labFrom);
  if (clsIn.name !== convIn.name && clsIn.name !== converted) {
    throw new UnsupportedError(`${clsFile}: input '${clsIn.name}' is named neither like the converter's input '${convIn.name}' nor like its output '${converted}'; re-export the classifier with input name '${convIn.name}'`);
  }
  return { ...d, convIn, clsIn, names: { image: convIn.name, converted, classifierInput: clsIn.name, exit } };
}

type PathNames = Awaited<ReturnType<typeof describePair>>['names'];


/** Sum two prepare reports: the bundle's report has one prepare section for all its sources. */
function mergePrepare(a: PrepareReport, b: PrepareReport): PrepareReport {
  const removed = { ...a.removed };
  for (const [op, n] of Object.entries(b.removed)) removed[op] = (removed[op] ?? 0) + n;
  return {
    nodesBefore: a.nodesBefore + b.nodesBefore,
    nodesAfter: a.nodesAfter + b.nodesAfter,
    batchNormFolded: [...a.batchNormFolded, ...b.batchNormFolded],
    batchNormKept: [...a.batchNormKept, ...b.batchNormKept],
    constantNodes: a.constantNodes + b.constantNodes,
    foldedTensors: [...a.foldedTensors, ...b.foldedTensors],
    reshapesFolded: [...a.reshapesFolded, ...b.reshapesFolded],
    removed,
    kept: [...a.kept, ...b.kept],
    deadNodes: a.deadNodes + b.deadNodes,
    unusedInitializers: a.unusedInitializers + b.unusedInitializers,
  };
}

/** Both paths over the batches: the classifier on the image, and converter → classifier. Also returns the converter's outputs. */
async function runPaths(
  converter: Uint8Array,
  classifier: Uint8Array,
  names: PathNames,
  batches: readonly TensorData[],
): Promise<{ raw: Float32Array; converted: Float32Array; convertedBatches: TensorData[] }> {
  const sessions: ModelSession[] = [];
  try {
    const conv = await createSession(converter, { graphOptimizationLevel: 'all' });
    sessions.push(conv);
    const cls = await createSession(classifier, { graphOptimizationLevel: 'all' });
    sessions.push(cls);
    const raw: Float32Array[] = [];
    const viaConv: Float32Array[] = [];
    const convertedBatches: TensorData[] = [];
    for (const b of batches) {
      const image: PlainTensor = { data: b.data, dims: b.dims };
      raw.push((await cls.run({ [names.classifierInput]: image }))[names.exit]!.data as Float32Array);
      const c = (await conv.run({ [names.image]: image }))[names.converted]!;
      if (c.dims.join() !== b.dims.join()) {
        throw new UnsupportedError(`${CBNET_FILES.converter}: output '${names.converted}' has dims [${c.dims}] for an image of [${b.dims}]; the classifier reads it as an image, so the dims must match`);
      }
      const cd: TensorData = { data: c.data as Float32Array, dims: c.dims };
      convertedBatches.push(cd);
      viaConv.push((await cls.run({ [names.classifierInput]: cd }))[names.exit]!.data as Float32Array);
    }
    return { raw: concatFloat32(raw), converted: concatFloat32(viaConv), convertedBatches };
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
}

/** What the budget is measured on: the classifier on the image, and converter → classifier. */
function pathsVerifier(names: PathNames, data: CalibrationData): QuantVerifier {
  return {
    outputs: [
      { stage: 1, exit: 'classifier<-image' },
      { stage: 1, exit: 'classifier<-converter' },
    ],
    async run(bytes) {
      const r = await runPaths(bytes[0]!, bytes[1]!, names, data.batches);
      return [r.raw, r.converted];
    },
  };
}

/** The options the backbone is compiled with: the CBNet's device, precision and calibration, its first stage recomputed. */
function backboneOptions(opts: CompileOptions): CompileOptions {
  return {
    model: opts.backbone!,
    device: opts.device,
    out: opts.out,
    precision: opts.precision ?? 'fp32',
    recompute: [0],
    latency: false,
    ...(opts.calibration !== undefined ? { calibration: opts.calibration } : {}),
    ...(opts.calibrationLimit !== undefined ? { calibrationLimit: opts.calibrationLimit } : {}),
    ...(opts.calibrationMethod !== undefined ? { calibrationMethod: opts.calibrationMethod } : {}),
    ...(opts.maxAccuracyDrop !== undefined ? { maxAccuracyDrop: opts.maxAccuracyDrop } : {}),
    ...(opts.mixedPrecision !== undefined ? { mixedPrecision: opts.mixedPrecision } : {}),
    ...(opts.onProgress ? { onProgress: (l: string) => opts.onProgress!(`backbone: ${l}`) } : {}),
  };
}

/**
 * Plan the multi-exit model behind the light classifier with its first stage recomputed, and
 * keep its deeper stages: the first of them then reads only the image, so it can follow the
 * CBNet classifier, which hands nothing but the image on. Checked to fit before anything compiles.
 */
async function planBackbone(env: CompileEnv, want: { inputName: string; labels: readonly string[]; preprocess: PreprocessSpec; taken: readonly string[] }): Promise<Extension> {
  const file = env.opts.backbone!;
  if (await isCbnetFolder(file)) throw new InputError(`--backbone ${file}: expected one multi-exit .onnx model (the one the CBNet classifier is the first exit of), got a folder`);
  const opts = backboneOptions(env.opts);
  // Its exits are verified on the images at every precision: they join the CBNet's verify table.
  const plan = await planMultiExit({ ...env, opts }, { verifyAtFp32: true });
  const problems: Problem[] = [];
  if (plan.stages.length < 2) problems.push({ where: `--backbone ${file}`, expected: 'a multi-exit model (two exits or more)', got: `${plan.stages.length} exit` });
  if (JSON.stringify(plan.labels) !== JSON.stringify(want.labels)) problems.push({ where: `--backbone ${file}: labels`, expected: JSON.stringify(want.labels), got: JSON.stringify(plan.labels) });
  if (plan.input.name !== want.inputName) problems.push({ where: `--backbone ${file}: input`, expected: `'${want.inputName}' (the CBNet's image input)`, got: `'${plan.input.name}'` });
  const pre = (p: PreprocessSpec): string => JSON.stringify({ ...p, size: [...p.size] });
  if (pre(plan.preprocess) !== pre(want.preprocess)) problems.push({ where: `--backbone ${file}: preprocess`, expected: pre(want.preprocess), got: pre(plan.preprocess) });
  const deeper = plan.stages.slice(1);
  const clash = deeper.flatMap((s) => s.outputs).filter((t) => want.taken.includes(t));
  if (clash.length) problems.push({ where: `--backbone ${file}: tensor names`, expected: `none of ${want.taken.join(', ')} (the CBNet's own)`, got: clash.join(', '), fix: 're-export one of the models with other output names' });
  if (problems.length) throw new InputError(`--backbone ${file}: does not fit this CBNet`, problems);
  if (deeper[0] && (deeper[0].inputs.length !== 1 || deeper[0].inputs[0] !== want.inputName)) {
    throw new UnsupportedError(`--backbone ${file}: its second stage reads ${deeper[0].inputs.join(', ')}, not only the image; the CBNet classifier hands nothing else on`);
  }
  plan.stages = plan.stages.map((s, k) => (k === 0 ? s : { ...s, file: `backbone-${k}.onnx` }));
  return {
    plan,
    opts,
    from: 1,
    notes: (own) => [
      `backbone ${path.basename(file)}: stages ${deeper.map((s) => s.exit).join(', ')} added as the hybrid's last fall-through (the first recomputes the classifier's trunk from the image)`,
      // A warning keeps its prefix first, so the console still shows it as one.
      // What the CBNet's own notes say already (thresholds, recompute, the device and fp16 notes) is not repeated.
      ...own.filter((n) => !/uncalibrated|hand nothing on|defaults to|CUDA\/TensorRT/.test(n)).map((n) => (n.startsWith('warning: ') ? `warning: backbone: ${n.slice('warning: '.length)}` : `backbone: ${n}`)),
    ],
    exitName: (exit) => `backbone:${exit}`,
  };
}

type Described = Awaited<ReturnType<typeof describePair>>;

/** The two stages: each file prepared and cut at its one output. */
function planPair(pair: Awaited<ReturnType<typeof readPair>>, d: Described, withBackbone: boolean): { stages: PlannedStage[]; prepare: PrepareReport } {
  const prepConv = prepareModel(pair.conv.model);
  const prepCls = prepareModel(pair.cls.model);
  const plans = [splitModel(prepConv.model, { exits: [d.names.converted] }).stages[0]!, splitModel(prepCls.model, { exits: [d.names.exit] }).stages[0]!];
  // The converter hands on the image (for the hybrid's classifier) and its output; the classifier
  // hands the image on to the first backbone stage, which recomputes its trunk.
  const carries = [[...new Set([d.convIn.name, d.names.converted])], withBackbone ? [d.convIn.name] : []];
  const files = [CBNET_FILES.converter, CBNET_FILES.classifier];
  const stages = plans.map((s, k) => ({ exit: s.exit, inputs: s.inputs, outputs: s.outputs, carry: carries[k]!, nodes: s.nodes.length, macs: s.macs, model: s.model, file: files[k]! }));
  return { stages, prepare: mergePrepare(prepConv.report, prepCls.report) };
}

/** How the pair is calibrated, verified and timed for int8: the classifier sees raw and converted images. */
function pairHooks(stages: readonly PlannedStage[], d: Described): Pick<FamilyPlan, 'carryParams' | 'calibrationDetail' | 'calibrate' | 'verifier' | 'latencyFeeds'> {
  const { convIn, clsIn, names } = d;
  const image = (): PlainTensor => {
    const img = randomImages(d.preprocess, 1, 7);
    return { data: img.data, dims: img.dims };
  };
  return {
    // The two stages are compiled apart: the classifier also reads raw images, which the converter's output parameters would not fit.
    carryParams: false,
    calibrationDetail: (data) => `: converter on ${data.count} images, classifier on those and their ${data.count} converted versions`,
    async calibrate(data, calOpts, floatBytes) {
      const converted = (await runPaths(floatBytes[0]!, floatBytes[1]!, names, data.batches)).convertedBatches;
      const convRanges = await calibrateStages([stages[0]!], convIn.name, data, calOpts);
      // The hybrid feeds the classifier raw images and converter outputs; ranges from only one of
      // the two would clip the other (converted images are normalised prototypes, raw ones are not).
      const clsRanges = await calibrateStages([stages[1]!], clsIn.name, { batches: [...data.batches, ...converted] }, calOpts);
      return {
        ranges: [convRanges.ranges[0]!, clsRanges.ranges[0]!],
        images: data.count,
        notes: [`classifier activations calibrated on ${data.count} raw + ${data.count} converted images (the hybrid feeds it both)`],
      };
    },
    verifier: (data) => pathsVerifier(names, data),
    latencyFeeds: async () => ({ batch: 1, feeds: [{ [convIn.name]: image() }, { [clsIn.name]: image() }] }),
  };
}

/** The manifest's pipeline: which stage feeds which, and the policies' order (backbone stages last). */
function cbnetPipeline(d: Described, extension: readonly { index: number; exit: string }[]): CbnetPipeline {
  return {
    converter: { stage: 0, input: d.convIn.name, output: d.names.converted },
    classifier: { stage: 1, input: d.clsIn.name, exit: d.names.exit, inputFrom: ['image', 'converter'] },
    policies: {
      cbnet: ['classifier<-converter'],
      hybrid: ['classifier<-image', 'classifier<-converter', ...extension.map((s) => `backbone:${s.exit}` as const)],
    },
    // Until thresholds are calibrated the hybrid always falls through, so the pair alone is cheaper.
    default: 'cbnet',
    ...(extension.length ? { backbone: extension.map((s) => s.index) } : {}),
  };
}

/** Name, version and hashes of the pair; one digest names both files, so provenance still has one source hash. */
function pairIdentity(dir: string, pair: Awaited<ReturnType<typeof readPair>>) {
  const { conv, cls } = pair;
  const shas = [sha256Hex(conv.bytes), sha256Hex(cls.bytes)] as const;
  const files = [CBNET_FILES.converter, CBNET_FILES.classifier];
  const sha = sha256Hex(new TextEncoder().encode(files.map((f, k) => `${shas[k]}  ${f}\n`).join('')));
  const name = cls.model.getMetadata('edgeexit.model') ?? conv.model.getMetadata('edgeexit.model') ?? path.basename(path.resolve(dir));
  const version = cls.model.getMetadata('edgeexit.version') ?? conv.model.getMetadata('edgeexit.version') ?? '0';
  return { shas, sha, name, version };
}

/** The CBNet contract on the pair (and the backbone's next exit), as report notes. */
async function pairContract(pair: Awaited<ReturnType<typeof readPair>>, sources: Uint8Array[], d: Described, backbone: Extension | undefined): Promise<string[]> {
  const deeper = backbone ? backbone.plan.stages.slice(backbone.from) : [];
  // The first deeper stage recomputes the trunk, so the running sum is what each exit costs in the backbone.
  let sum = 0;
  const exits = deeper.map((s) => ({ name: s.exit, cumulativeMacs: (sum += s.macs) }));
  return cbnetContractNotes({
    converter: { model: pair.conv.model, bytes: sources[0]!, file: pair.convFile, input: d.convIn.name, output: d.names.converted },
    classifier: { model: pair.cls.model, bytes: sources[1]!, file: pair.clsFile, input: d.clsIn.name, exit: d.names.exit },
    preprocess: d.preprocess,
    ...(backbone ? { backbone: { file: backbone.plan.where, exits } } : {}),
  });
}

/** A warning when converter → classifier answers worse on the labelled images than the classifier alone. */
export function pairAccuracyNotes(dir: string, verify: VerifyResult, precision: Precision): string[] {
  const alone = verify.paths.find((p) => p.exit === 'classifier<-image');
  const pair = verify.paths.find((p) => p.exit === 'classifier<-converter');
  if (!alone || !pair || !(pair.compiledTop1 < alone.compiledTop1)) return [];
  const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
  return [
    `warning: ${dir}: converter → classifier is less accurate than the classifier alone on ${verify.images} images of ${verify.source}: ` +
      `${pct(pair.compiledTop1)} vs ${pct(alone.compiledTop1)} top-1 at ${precision} (−${((alone.compiledTop1 - pair.compiledTop1) * 100).toFixed(2)} pp), so the cbnet policy (the default) answers worse than the classifier would alone; ` +
      `fix: check that the converter ends with the classifier's normalisation and was trained against this classifier, or run the hybrid policy once \`calibrate\` has set its threshold (it keeps the classifier's confident answers)`,
  ];
}

/** Plan a CBNet folder: read and check the pair, plan its two stages and, with --backbone, the fall-through. */
export async function planCbnet(env: CompileEnv): Promise<FamilyPlan> {
  const { opts } = env;
  const dir = opts.model;
  if (opts.exits?.length) throw new InputError(`--exits: does not apply to a CBNet folder (${dir}); its exits are fixed: the classifier on the image, and converter → classifier`);
  const pair = await readPair(dir);
  const d = await describePair(dir, pair, opts);
  const { images, notes } = await labelledImages({ flag: opts.calibration, limit: opts.calibrationLimit, precision: env.precision, labels: d.labels, file: dir, atFp32: true, what: 'the two paths' });
  const backbone = opts.backbone !== undefined ? await planBackbone(env, { inputName: d.convIn.name, labels: d.labels, preprocess: d.preprocess, taken: [d.names.converted, d.names.exit] }) : undefined;
  const { stages, prepare } = planPair(pair, d, backbone !== undefined);
  const sources = [pair.conv, pair.cls].map((s) => (s.model.externalTensors.length > 0 ? encodeModel(s.model) : s.bytes));
  notes.push(...(await pairContract(pair, sources, d, backbone)));
  const { shas, sha, name, version } = pairIdentity(dir, pair);
  const deeperMacs = (backbone ? backbone.plan.stages.slice(backbone.from) : []).reduce((a, s) => a + s.macs, 0);
  return {
    kind: 'cbnet',
    where: dir,
    sourceNoun: 'the source files',
    input: d.convIn,
    preprocess: d.preprocess,
    labels: d.labels,
    stages,
    checks: [
      { source: sources[0]!, inputName: d.convIn.name, stages: [0] },
      { source: sources[1]!, inputName: d.clsIn.name, stages: [1] },
    ],
    ...(images ? { images } : {}),
    ...pairHooks(stages, d),
    verifyNotes: (verify, precision) => pairAccuracyNotes(dir, verify, precision),
    notes,
    closingNotes: [
      'hybrid threshold is uncalibrated (null): until `calibrate` sets it, run the cbnet policy (converter → classifier)',
      ...(backbone ? [] : ['no --backbone: the hybrid ends at the converter; `--backbone <multi-exit model>` adds its deeper stages as the last fall-through']),
    ],
    prepare,
    report: {
      model: { file: dir, name, version, sha256: sha },
      inputFrom: { preprocess: d.preFrom, labels: d.labFrom },
      // Converter and classifier are separate models; nothing is handed over to recompute.
      split: { recompute: [], renamed: {} },
      // The backbone's stages are checked against their own source when it is compiled.
      sourceMacs: stages.reduce((a, p) => a + p.macs, 0) + deeperMacs,
    },
    source: { file: path.basename(path.resolve(dir)), sha256: sha },
    name,
    version,
    ...(backbone ? { extension: backbone } : {}),
    exitPoints: (_n, pipeline) => pipeline!.policies.hybrid.length,
    pipeline: (ext) => cbnetPipeline(d, ext),
    section: (pipeline, verify) => ({
      cbnet: {
        sources: [
          { role: 'converter', file: CBNET_FILES.converter, sha256: shas[0], macs: stages[0]!.macs },
          { role: 'classifier', file: CBNET_FILES.classifier, sha256: shas[1], macs: stages[1]!.macs },
          ...(backbone ? [{ role: 'backbone' as const, file: opts.backbone!, sha256: backbone.plan.report.model.sha256, macs: deeperMacs }] : []),
        ],
        pipeline: pipeline!,
        ...(verify ? { verify } : {}),
      },
    }),
  };
}
