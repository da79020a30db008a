// A compile's inputs, read and checked before any work: the source model file, its preprocessing
// and labels (flags, else the model's metadata), its one image input, the width of its exits and
// the labelled images for int8. Shared by every model family.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError, UnsupportedError, ValidationError, type Problem } from '../util/errors.js';
import { OnnxGraph, decodeModel, inferShapes, valueInfoShape, type OnnxModel } from '../onnx/index.js';
import { DataType } from '../onnx/dtype.js';
import { packageRoot } from '../devices/index.js';
import { folderNameForLabel, foldersCoverLabels } from '../data/imagefolder.js';
import { META_LABELS, META_PREPROCESS, parseLabels } from '../model/describe.js';
import { parsePreprocessSpec, type PreprocessSpec } from '../backends/image.js';
import { DEFAULT_CALIBRATION } from './options.js';


export async function readSourceModel(file: string): Promise<{ model: OnnxModel; bytes: Uint8Array }> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await fsp.readFile(file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a file' : `cannot be read (${code ?? String(err)})`;
    throw new InputError(`${file}: ${why}; expected an ONNX model file (.onnx)`, [{ where: file, message: why }], { cause: err });
  }
  // One read serves the hash, the graph and the reference session, even if the file is rewritten meanwhile.
  const model = decodeModel(bytes, { source: file, baseDir: path.dirname(path.resolve(file)) });
  return { model, bytes };
}

async function readArgFile(file: string, flag: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(`${flag} ${file}: ${code === 'ENOENT' ? 'no such file' : `cannot be read (${code})`}`, [{ where: flag, message: `cannot read ${file}` }], { cause: err });
  }
}

/** A --preprocess example fitted to the model's input (channels and size), for error messages. */
function preprocessExample(model: OnnxModel): string {
  const v = OnnxGraph.of(model).inputs[0];
  const dims = v ? (valueInfoShape(v)?.shape ?? []) : [];
  const rgb = dims[1] === 3;
  const [h, w] = dims.length === 4 ? [dims[2], dims[3]] : [224, 224];
  const mean = rgb ? '[0.485,0.456,0.406]' : '[0.5]';
  const std = rgb ? '[0.229,0.224,0.225]' : '[0.5]';
  return `'{"colorspace":"${rgb ? 'rgb' : 'gray'}","size":[${h},${w}],"scale":0.00392156862745098,"mean":${mean},"std":${std}}'`;
}

export async function resolvePreprocess(model: OnnxModel, file: string, flag: string | undefined): Promise<{ spec: PreprocessSpec; from: string } | Problem> {
  if (flag !== undefined) {
    const inline = flag.trimStart().startsWith('{');
    const text = inline ? flag : await readArgFile(flag, '--preprocess');
    return { spec: parsePreprocessSpec(text, inline ? '--preprocess' : `--preprocess ${flag}`), from: inline ? '--preprocess' : flag };
  }
  const meta = model.getMetadata(META_PREPROCESS);
  if (meta !== undefined) return { spec: parsePreprocessSpec(meta, `${file}: metadata_props ${META_PREPROCESS}`), from: `metadata ${META_PREPROCESS}` };
  return {
    where: file,
    message: `has no ${META_PREPROCESS} metadata, so the input preprocessing is unknown`,
    fix: `add --preprocess ${preprocessExample(model)} with your model's values (JSON text or a JSON file)`,
  };
}

/**
 * Labels from a file: a JSON array, or one label per line.
 *
 * @example
 * ```ts
 * import { parseLabelsText } from 'edgeexit/compiler';
 * parseLabelsText('cat\ndog\n', 'labels.txt'); // ['cat', 'dog']
 * parseLabelsText('["cat","dog"]', 'labels.json'); // the same
 * ```
 */
export function parseLabelsText(text: string, where: string): string[] {
  const t = text.trim();
  let labels: unknown;
  if (t.startsWith('[')) {
    try {
      labels = JSON.parse(t);
    } catch (err) {
      throw new ValidationError(where, [{ where, expected: 'a JSON array of class names, or one class name per line', message: (err as Error).message }]);
    }
  } else {
    labels = t.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  }
  if (!Array.isArray(labels) || labels.length === 0 || !labels.every((l) => typeof l === 'string' && l.length > 0)) {
    throw new ValidationError(where, [{ where, expected: 'a non-empty list of class names (JSON array, or one per line)', got: t.slice(0, 60) || 'an empty file' }]);
  }
  const dup = labels.find((l, i) => labels.indexOf(l) !== i);
  if (dup !== undefined) throw new ValidationError(where, [{ where, message: `label ${JSON.stringify(dup)} appears twice`, expected: 'distinct class names' }]);
  return labels as string[];
}

export async function resolveLabels(model: OnnxModel, file: string, flag: string | undefined): Promise<{ labels: string[]; from: string } | Problem> {
  if (flag !== undefined) return { labels: parseLabelsText(await readArgFile(flag, '--labels'), `--labels ${flag}`), from: flag };
  const meta = model.getMetadata(META_LABELS);
  if (meta !== undefined) return { labels: parseLabels(meta, file), from: `metadata ${META_LABELS}` };
  return { where: file, message: `has no ${META_LABELS} metadata, so the class names are unknown`, fix: 'add --labels <file> (a JSON array, or one class name per line)' };
}

export function isProblem<T extends object>(v: T | Problem): v is Problem {
  return 'where' in v && !('spec' in v) && !('labels' in v);
}

/** The one image input: float32 NCHW whose C, H, W agree with the preprocessing. */
export function checkInput(model: OnnxModel, file: string, spec: PreprocessSpec): { name: string; shape: (number | string)[]; fixedBatch?: number } {
  const graph = OnnxGraph.of(model);
  if (graph.inputs.length !== 1) {
    throw new UnsupportedError(
      `${file}: has ${graph.inputs.length} inputs (${graph.inputNames.map((n) => `'${n}'`).join(', ') || 'none'}); expected exactly one image input`,
    );
  }
  const v = graph.inputs[0]!;
  const tt = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  const shape = (tt?.shape?.dim ?? []).map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : d.value.case === 'dimParam' && d.value.value ? d.value.value : 'batch'));
  if (tt?.elemType !== DataType.FLOAT) {
    throw new UnsupportedError(`${file}: input '${v.name}' is not float32; expected a float32 NCHW image tensor`);
  }
  const channels = spec.colorspace === 'rgb' ? 3 : 1;
  const want = [channels, spec.size[0], spec.size[1]];
  const got = shape.slice(1);
  if (shape.length !== 4 || got.some((d, i) => typeof d === 'number' && d !== want[i])) {
    throw new InputError(`${file}: input '${v.name}' has dims [${shape.join(',')}], but the preprocessing makes [batch,${want.join(',')}] (${spec.colorspace} ${spec.size[0]}×${spec.size[1]}); fix --preprocess or the model`, [
      { where: `input '${v.name}'`, expected: `[batch,${want.join(',')}]`, got: `[${shape.join(',')}]` },
    ]);
  }
  const batch = shape[0]!;
  return typeof batch === 'number' ? { name: v.name, shape: [batch, ...want], fixedBatch: batch } : { name: v.name, shape: [batch, ...want] };
}

export function checkExitWidths(model: OnnxModel, file: string, exits: readonly string[], labels: readonly string[], from: string): void {
  const shapes = inferShapes(model);
  const graph = OnnxGraph.of(model);
  const problems: Problem[] = [];
  for (const e of exits) {
    const s = shapes.tensors.get(e)?.shape ?? (graph.valueInfo(e) ? valueInfoShape(graph.valueInfo(e)!)?.shape : undefined);
    const width = s?.at(-1);
    if (s && (s.length !== 2 || width !== labels.length)) {
      problems.push({ where: `${file}: exit '${e}'`, expected: `logits of shape [batch, ${labels.length}] (one per label in ${from})`, got: `[${s.join(', ')}]` });
    }
  }
  if (problems.length > 0) throw new ValidationError(file, problems);
}

/** The ImageFolder for int8 calibration: the flag, else the bundled Fashion-MNIST set when its classes are the model's labels. */
export async function resolveCalibrationDir(flag: string | undefined, labels: readonly string[], file: string): Promise<string> {
  if (flag) return flag;
  const dir = path.join(packageRoot(), DEFAULT_CALIBRATION);
  try {
    const folders = (await fsp.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    if (foldersCoverLabels(folders, labels)) return dir;
  } catch {
    // No bundled calibration set: fall through to the error below.
  }
  throw new InputError(`--precision int8 needs calibration images: ${file}'s labels are not those of ${DEFAULT_CALIBRATION}; pass --calibration <ImageFolder> with labelled images (one subfolder per label)`, [
    { where: '--calibration', message: 'required for int8', expected: `an ImageFolder with subfolders ${labels.slice(0, 4).map((l) => `'${folderNameForLabel(l)}'`).join(', ')}${labels.length > 4 ? ', …' : ''}` },
  ]);
}

/** A source file read once: the graph and the bytes the hash and reference session use. */
export type SourceModel = Awaited<ReturnType<typeof readSourceModel>>;

/** The image description (preprocessing and labels) of a model, or one error naming every flag that is missing. */
export function requireDescription(
  what: string,
  pre: { spec: PreprocessSpec; from: string } | Problem,
  lab: { labels: string[]; from: string } | Problem,
): { preprocess: PreprocessSpec; preFrom: string; labels: string[]; labFrom: string } {
  const missing = [pre, lab].filter((x) => isProblem(x)) as Problem[];
  if (missing.length > 0) {
    throw new InputError(`${what} does not describe its input, and no flag says it:\n` + missing.map((p) => `  - ${p.message} (fix: ${p.fix})`).join('\n'), missing);
  }
  const { spec: preprocess, from: preFrom } = pre as { spec: PreprocessSpec; from: string };
  const { labels, from: labFrom } = lab as { labels: string[]; from: string };
  return { preprocess, preFrom, labels, labFrom };
}
