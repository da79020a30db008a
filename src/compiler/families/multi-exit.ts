// The multi-exit family: one ONNX model whose graph outputs are exits in depth order. Its plan
// prepares the graph, splits it into one stage per exit (each handing on what the deeper ones
// need, or, for tiny stages, nothing: the next recomputes their trunk), and checks the stages as
// one chain against the model.
import { contractNotes } from '../contract.js';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { InputError } from '../../util/errors.js';
import { costPerOutput, encodeModel, type OnnxModel } from '../../onnx/index.js';
import { createSession, type PlainTensor } from '../../backends/onnxruntime.js';
import type { PreprocessSpec } from '../../backends/image.js';
import { sha256Hex } from '../../bundle/files.js';
import { randomImages } from '../check.js';
import { prepareModel } from '../prepare.js';
import { chooseRecompute, resolveExits, splitModel, type SplitResult } from '../split.js';
import { checkExitWidths, checkInput, readSourceModel, requireDescription, labelledImages, resolveLabels, resolvePreprocess } from '../inputs.js';
import type { CompileOptions } from '../options.js';
import type { CompileEnv, FamilyPlan, ModelFamily } from './family.js';

/** Stage file names of a multi-exit bundle. */
export function stageFile(k: number): string {
  return `stage-${k}.onnx`;
}

/**
 * The multi-exit family: any single .onnx file.
 *
 * @example
 * const plan = await multiExitFamily.plan({ opts, device, precision: 'fp32' });
 */
export const multiExitFamily: ModelFamily = {
  name: 'multi-exit',
  async matches(model: string): Promise<boolean> {
    const st = await fsp.stat(model).catch(() => undefined);
    return !(st?.isDirectory() ?? false);
  },
  plan: (env) => planMultiExit(env),
};

/** Which stages hand nothing on, and the split with them. */
function splitWithRecompute(prepared: OnnxModel, exits: string[], recompute: CompileOptions['recompute']): { split: SplitResult; recompute: number[]; notes: string[] } {
  const plain = splitModel(prepared, { exits });
  const auto = recompute === undefined || recompute === 'auto';
  const chosen = recompute === 'none' ? [] : auto ? chooseRecompute(plain.stages.map((s) => s.macs), undefined, trunkMacs(prepared, exits, plain)) : [...recompute];
  if (chosen.length === 0) return { split: plain, recompute: chosen, notes: [] };
  const split = splitModel(prepared, { exits, recompute: chosen });
  const extra = split.stages.reduce((a, s) => a + s.macs, 0) - plain.stages.reduce((a, s) => a + s.macs, 0);
  const note =
    `stage(s) ${chosen.join(', ')} hand nothing on: the next stage recomputes their trunk from the input (+${extra.toLocaleString('en-US')} MACs for samples that go on), ` +
    `so a sample leaving there skips the hand-over copy${auto ? ' (auto: stages whose trunk has ≤ 5 % of the MACs; --recompute none to hand over instead)' : ''}`;
  return { split, recompute: chosen, notes: [note] };
}

// What the next stage would add by recomputing stage k (its trunk; the exit head is not
// recomputed): the split with stage k recomputed, against the plain one. The last stage: all of it.
function trunkMacs(prepared: OnnxModel, exits: string[], plain: SplitResult): number[] {
  const n = plain.stages.length;
  return plain.stages.map((s, k) => (k === n - 1 ? s.macs : splitModel(prepared, { exits, recompute: [k] }).stages[k + 1]!.macs - plain.stages[k + 1]!.macs));
}

/**
 * What each stage reads for one batch (default 1 image), got by running the float stages in chain order on one random
 * preprocessed image: the timing must feed real hand-over tensors, not zeros, because ReLU
 * sparsity and denormals change how long a run takes.
 */
export async function chainFeeds(
  stages: readonly { bytes: Uint8Array; inputs: readonly string[]; carry: readonly string[] }[],
  inputName: string,
  preprocess: PreprocessSpec,
  batch = 1,
): Promise<Record<string, PlainTensor>[]> {
  const img = randomImages(preprocess, batch, 7);
  let alive: Record<string, PlainTensor> = { [inputName]: { data: img.data, dims: img.dims } };
  const out: Record<string, PlainTensor>[] = [];
  for (const s of stages) {
    const feeds: Record<string, PlainTensor> = {};
    for (const n of s.inputs) feeds[n] = alive[n]!;
    out.push(feeds);
    const session = await createSession(s.bytes);
    try {
      const res = await session.run(feeds);
      const next: Record<string, PlainTensor> = {};
      for (const n of s.carry) next[n] = res[n] ?? alive[n]!;
      alive = next;
    } finally {
      await session.close();
    }
  }
  return out;
}

/**
 * Plan a multi-exit model: read and check it, prepare it, split it into one stage per exit.
 * `verifyAtFp32` loads the labelled images at fp32 too (a CBNet backbone: its exits join the
 * CBNet's verify table at every precision).
 */
export async function planMultiExit(env: CompileEnv, how: { verifyAtFp32?: boolean } = {}): Promise<FamilyPlan> {
  const { opts, precision } = env;
  if (opts.backbone !== undefined) {
    throw new InputError(`--backbone: applies to a CBNet folder (converter.onnx + classifier.onnx); ${opts.model} is one model, whose own exits already run in stage order`);
  }
  const file = opts.model;
  const { model, bytes } = await readSourceModel(file);
  const exits = resolveExits(model, opts.exits);
  const d = requireDescription(`${file}: the model`, await resolvePreprocess(model, file, opts.preprocess), await resolveLabels(model, file, opts.labels));
  const input = checkInput(model, file, d.preprocess);
  checkExitWidths(model, file, exits, d.labels, d.labFrom);
  const labelled = await labelledImages({ flag: opts.calibration, limit: opts.calibrationLimit || undefined, precision, labels: d.labels, file, atFp32: how.verifyAtFp32 ?? false });

  const { model: prepared, report: prepare } = prepareModel(model);
  const { split, recompute, notes } = splitWithRecompute(prepared, exits, opts.recompute);
  const stages = split.stages.map((s, k) => ({ exit: s.exit, inputs: s.inputs, outputs: s.outputs, carry: s.carry, nodes: s.nodes.length, macs: s.macs, model: s.model, file: stageFile(k) }));
  // The check runs the source as onnxruntime reads it: with its external data inlined.
  const checkSource = model.externalTensors.length > 0 ? encodeModel(model) : bytes;
  const sha = sha256Hex(bytes);
  const name = model.getMetadata('edgeexit.model') ?? path.basename(file, path.extname(file));
  const version = model.getMetadata('edgeexit.version') ?? (model.modelVersion ? String(model.modelVersion) : '0');
  notes.push(...(await contractNotes({ model, bytes: checkSource, file, exits, input, preprocess: d.preprocess })));
  notes.push(...labelled.notes);
  if (model.getMetadata('edgeexit.model') === undefined) notes.push(`the bundle is named '${name}' ${version} after the file: the model has no edgeexit.model metadata (fix: add edgeexit.model and edgeexit.version to metadata_props; see docs/bring-your-own-model.md)`);
  return {
    kind: 'multi-exit',
    where: file,
    sourceNoun: 'the model',
    input,
    preprocess: d.preprocess,
    labels: d.labels,
    stages,
    checks: [{ source: checkSource, inputName: input.name, stages: stages.map((_, k) => k) }],
    ...(labelled.images ? { images: { ...labelled.images, ...(input.fixedBatch !== undefined ? { fixedBatch: input.fixedBatch } : {}) } } : {}),
    carryParams: true,
    async latencyFeeds(floatBytes) {
      // A model exported with a fixed batch size only runs at that size, so it is timed at it.
      const batch = input.fixedBatch ?? 1;
      const feeds = await chainFeeds(stages.map((s, k) => ({ bytes: floatBytes[k]!, inputs: s.inputs, carry: s.carry })), input.name, d.preprocess, batch);
      return { batch, feeds };
    },
    notes,
    closingNotes: ['exit thresholds are uncalibrated (null): every sample runs to the last exit until they are calibrated'],
    prepare,
    report: {
      model: { file, name, version, sha256: sha },
      inputFrom: { preprocess: d.preFrom, labels: d.labFrom },
      split: { renamed: split.renamed, recompute },
      sourceMacs: costPerOutput(model).filter((c) => exits.includes(c.output)).reduce((a, c) => a + c.incrementalMacs, 0),
    },
    source: { file: path.basename(file), sha256: sha },
    name,
    version,
    exitPoints: (n) => n,
  };
}
