// What a model file says about itself: its exits (graph outputs), input, preprocessing and labels
// from edgeexit's `metadata_props`, and its cost per exit. Every command that takes a model path
// starts here, so a model without the metadata fails in one place with one clear message.
import path from 'node:path';
import { OnnxGraph, readModel, costPerOutput, modelCost, opHistogram, parameterCount, type ModelCost, type OnnxModel, type OutputCost } from '../onnx/index.js';
import { parsePreprocessSpec, type PreprocessSpec } from '../backends/image.js';
import { InputError, ValidationError, show } from '../util/errors.js';

export const META_PREPROCESS = 'edgeexit.preprocess';
export const META_LABELS = 'edgeexit.labels';

export interface ModelIO {
  name: string;
  /** Dims with symbolic ones as their name (e.g. `batch`), unknown as `?`. */
  dims: (number | string)[];
  dtype: string;
}

export interface ModelDescription {
  file: string;
  name: string;
  irVersion: number;
  producer: string;
  opsets: { domain: string; version: number }[];
  inputs: ModelIO[];
  /** Graph outputs = exits, cheapest first. */
  outputs: ModelIO[];
  exits: OutputCost[];
  /** Per exit: false when it depends on a node whose cost is unknown (see `uncosted`); its MACs are then a lower bound. */
  exitMacsKnown: boolean[];
  /** false when some node could not be costed: totalMacs is then a lower bound. */
  totalMacsKnown: boolean;
  /** Nodes the cost model could not cost (an op it does not know, or unknown shapes), with the reason. */
  uncosted: ModelCost['unresolved'];
  totalMacs: number;
  params: number;
  histogram: [string, number][];
  metadata: Record<string, string>;
  preprocess?: PreprocessSpec;
  labels?: string[];
  /** Problems with the edgeexit metadata (missing or malformed), kept for `inspect` to show. */
  metadataProblems: string[];
}

/** Parse the `edgeexit.labels` JSON array; throws ValidationError naming the file. */
export function parseLabels(value: string, file: string): string[] {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch (err) {
    throw new ValidationError(file, [{ where: `${file}: metadata_props ${META_LABELS}`, expected: 'a JSON array of class names', got: show(value), message: (err as Error).message }]);
  }
  if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new ValidationError(file, [{ where: `${file}: metadata_props ${META_LABELS}`, expected: 'a non-empty JSON array of class names', got: show(v) }]);
  }
  return v as string[];
}

function ioOf(model: OnnxModel, which: 'input' | 'output'): ModelIO[] {
  const init = new Set(model.graph.initializer.map((t) => t.name));
  const list = which === 'input' ? model.graph.input.filter((v) => !init.has(v.name)) : model.graph.output;
  return list.map((v) => {
    const t = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
    const dims = (t?.shape?.dim ?? []).map((d) =>
      d.value.case === 'dimValue' ? Number(d.value.value) : d.value.case === 'dimParam' ? d.value.value : '?',
    );
    return { name: v.name, dims, dtype: t ? dtypeName(t.elemType) : '?' };
  });
}

const DTYPE_SHORT: Record<number, string> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 10: 'float16', 11: 'float64', 16: 'bfloat16' };
function dtypeName(code: number): string {
  return DTYPE_SHORT[code] ?? `dtype ${code}`;
}

/** Read a model file and describe it. Throws for unreadable files; metadata problems are collected. */
export async function describeModel(file: string): Promise<ModelDescription> {
  const model = await readModel(file);
  return describeLoaded(model, file);
}

export function describeLoaded(model: OnnxModel, file: string): ModelDescription {
  // Every command counts exits by graph outputs; with none there is nothing to run or cost.
  if (model.graph.output.length === 0)
    throw new InputError(`${file}: the graph has no outputs: expected at least one (each graph output is an exit) (fix: export the model with its exit logits as graph outputs)`, [
      { where: `${file}: graph.output`, expected: 'at least one output', got: 'none' },
    ]);
  const metadata = model.metadata;
  const metadataProblems: string[] = [];
  let preprocess: PreprocessSpec | undefined;
  let labels: string[] | undefined;
  const pre = metadata[META_PREPROCESS];
  if (pre === undefined) metadataProblems.push(`no ${META_PREPROCESS} in metadata_props`);
  else {
    try {
      preprocess = parsePreprocessSpec(pre, `${file}: metadata_props ${META_PREPROCESS}`);
    } catch (err) {
      metadataProblems.push((err as Error).message);
    }
  }
  const lab = metadata[META_LABELS];
  if (lab === undefined) metadataProblems.push(`no ${META_LABELS} in metadata_props`);
  else {
    try {
      labels = parseLabels(lab, file);
    } catch (err) {
      metadataProblems.push((err as Error).message);
    }
  }
  const cost = modelCost(model);
  const uncosted = new Set(cost.unresolved.map((u) => `${u.opType}\u0000${u.node}`));
  const graph = OnnxGraph.of(model);
  const exitMacsKnown = model.graph.output.map((o) => !graph.requiredNodes([o.name]).some((n) => uncosted.has(`${n.opType}\u0000${n.name}`)));
  return {
    file,
    name: metadata['edgeexit.model'] ?? path.basename(file, '.onnx'),
    irVersion: Number(model.proto.irVersion),
    producer: `${model.proto.producerName} ${model.proto.producerVersion}`.trim(),
    opsets: model.proto.opsetImport.map((o) => ({ domain: o.domain || 'ai.onnx', version: Number(o.version) })),
    inputs: ioOf(model, 'input'),
    outputs: ioOf(model, 'output'),
    exits: costPerOutput(model),
    exitMacsKnown,
    totalMacsKnown: cost.unresolved.length === 0,
    uncosted: cost.unresolved,
    totalMacs: cost.macs,
    params: parameterCount(model),
    histogram: [...opHistogram(model).entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])),
    metadata,
    ...(preprocess ? { preprocess } : {}),
    ...(labels ? { labels } : {}),
    metadataProblems,
  };
}

/** The preprocessing and labels a model must carry to be evaluated or compiled. */
export function requireSelfDescription(d: ModelDescription): { preprocess: PreprocessSpec; labels: string[] } {
  if (!d.preprocess || !d.labels) {
    throw new InputError(
      `${d.file}: the model does not describe its input:\n` +
        d.metadataProblems.map((p) => `  - ${p}`).join('\n') +
        `\nexpected metadata_props ${META_PREPROCESS} = {"colorspace":"gray"|"rgb","size":[h,w],"scale":…,"mean":[…],"std":[…]} ` +
        `and ${META_LABELS} = ["class", …] (fix: export with them — see models/zoo/common.py add_metadata — or pass --preprocess and --labels where the command has them)`,
    );
  }
  return { preprocess: d.preprocess, labels: d.labels };
}
