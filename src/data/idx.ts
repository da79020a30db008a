// IDX reader (the MNIST / Fashion-MNIST file format) so evaluation and calibration can use the
// Debian-packaged Fashion-MNIST without Python. IDX is a 4-byte magic (0x00 0x00 <type> <ndims>),
// ndims big-endian uint32 sizes, then the row-major payload. Only uint8 payloads (type 0x08) are
// used by these datasets, so other element types are rejected rather than half-supported.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { InputError, formatProblem, type Problem } from '../util/errors.js';
import { LABEL_MATCH_RULE, labelMatcher } from './labels.js';

const gunzip = promisify(zlib.gunzip);

/** Images from an idx3 file: `pixels` holds `count` row-major `rows`×`cols` gray images back to back. */
export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  pixels: Uint8Array;
}

/** A parsed IDX file of any rank (uint8 payload only). */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Fashion-MNIST as installed by Debian's `dataset-fashion-mnist`. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** Fashion-MNIST class names, in label order (label 0 is 'T-shirt/top'). */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

const IDX_TYPES: Record<number, string> = {
  0x08: 'uint8',
  0x09: 'int8',
  0x0b: 'int16',
  0x0c: 'int32',
  0x0d: 'float32',
  0x0e: 'float64',
};

function fail(p: Problem, cause?: unknown): InputError {
  return new InputError(formatProblem(p), [p], cause === undefined ? undefined : { cause });
}

function hex(bytes: Uint8Array, n = 4): string {
  return (
    Array.from(bytes.subarray(0, n), (b) => b.toString(16).padStart(2, '0')).join(' ') +
    (bytes.length < n ? ` (only ${bytes.length} byte${bytes.length === 1 ? '' : 's'})` : '')
  );
}

/** True when `bytes` start with the gzip magic (1f 8b): the file extension is not trusted. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Parse IDX bytes (already decompressed). `file` only names the source in errors;
 * `expectDims` (when given) is the rank the caller needs (3 for images, 1 for labels).
 * The result's `data` is a view into `bytes`, not a copy.
 */
export function parseIdx(bytes: Uint8Array, file: string, expectDims?: number): IdxArray {
  const what = expectDims === 3 ? 'idx3 images' : expectDims === 1 ? 'idx1 labels' : 'IDX';
  const expectedMagic = expectDims === undefined ? '00 00 08 <ndims>' : `00 00 08 0${expectDims}`;
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    throw fail({
      where: file,
      message: `not an IDX file (${what})`,
      expected: `magic ${expectedMagic}`,
      got: hex(bytes),
      fix: 'pass an uncompressed or gzipped IDX file such as t10k-images-idx3-ubyte.gz',
    });
  }
  const type = bytes[2]!;
  const ndims = bytes[3]!;
  if (type !== 0x08) {
    throw fail({
      where: file,
      message: `unsupported IDX element type 0x${type.toString(16).padStart(2, '0')} (${IDX_TYPES[type] ?? 'unknown'})`,
      expected: `magic ${expectedMagic} (uint8 payload)`,
      got: hex(bytes),
    });
  }
  if (expectDims !== undefined && ndims !== expectDims) {
    throw fail({
      where: file,
      message: `wrong IDX rank for ${what}`,
      expected: `magic ${expectedMagic} (${expectDims} dimension${expectDims === 1 ? '' : 's'})`,
      got: `${hex(bytes)} (${ndims} dimension${ndims === 1 ? '' : 's'})`,
      fix: expectDims === 3 ? 'pass the *-images-idx3-ubyte file here' : 'pass the *-labels-idx1-ubyte file here',
    });
  }
  const headerLen = 4 + 4 * ndims;
  if (bytes.length < headerLen) {
    throw fail({
      where: file,
      message: 'truncated IDX header',
      expected: `${headerLen} header bytes for ${ndims} dimensions`,
      got: `${bytes.length} bytes`,
    });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let total = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    total *= d;
  }
  const payload = bytes.length - headerLen;
  if (payload !== total) {
    throw fail({
      where: file,
      message: payload < total ? 'truncated IDX data' : 'IDX data longer than its header says',
      expected: `${total} payload bytes (${dims.join('×')}) after the ${headerLen}-byte header`,
      got: `${payload}`,
      fix: payload < total ? 'the file is incomplete; download or copy it again' : undefined,
    });
  }
  return { dims, data: bytes.subarray(headerLen, headerLen + total) };
}

/** Read a file and gunzip it when it starts with the gzip magic (whatever its name). */
export async function readMaybeGzip(file: string): Promise<Uint8Array> {
  let raw: Buffer;
  try {
    raw = await fsp.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw fail(
      {
        where: file,
        message: code === 'ENOENT' ? 'file not found' : `cannot read file (${code ?? String(err)})`,
      },
      err,
    );
  }
  if (!isGzip(raw)) return raw;
  try {
    return await gunzip(raw);
  } catch (err) {
    throw fail(
      {
        where: file,
        message: `corrupt or truncated gzip data (${(err as Error).message})`,
        expected: 'a complete .gz file',
        got: `${raw.length} compressed bytes`,
        fix: 'download or copy the file again',
      },
      err,
    );
  }
}

/** Parse idx3 image bytes (already decompressed). */
export function parseIdxImages(bytes: Uint8Array, file: string): IdxImages {
  const { dims, data } = parseIdx(bytes, file, 3);
  return { count: dims[0]!, rows: dims[1]!, cols: dims[2]!, pixels: data };
}

/** Parse idx1 label bytes (already decompressed). */
export function parseIdxLabels(bytes: Uint8Array, file: string): Uint8Array {
  return parseIdx(bytes, file, 1).data;
}

/** Read an idx3 image file, plain or gzipped. */
export async function readIdxImages(file: string): Promise<IdxImages> {
  return parseIdxImages(await readMaybeGzip(file), file);
}

/** Read an idx1 label file, plain or gzipped. */
export async function readIdxLabels(file: string): Promise<Uint8Array> {
  return parseIdxLabels(await readMaybeGzip(file), file);
}

/** Images and labels that belong together (same count, checked). */
export interface IdxDataset {
  images: IdxImages;
  labels: Uint8Array;
  imagesFile: string;
  labelsFile: string;
}

/** Read an images file and its labels file and check that they describe the same samples. */
export async function readIdxDataset(imagesFile: string, labelsFile: string): Promise<IdxDataset> {
  const [images, labels] = await Promise.all([readIdxImages(imagesFile), readIdxLabels(labelsFile)]);
  if (images.count !== labels.length) {
    throw fail({
      where: `${imagesFile} + ${labelsFile}`,
      message: 'image/label count mismatch',
      expected: `${images.count} labels (one per image in ${path.basename(imagesFile)})`,
      got: `${labels.length} labels in ${path.basename(labelsFile)}`,
      fix: 'pair the images file with the labels file of the same split',
    });
  }
  return { images, labels, imagesFile, labelsFile };
}

/** Encode a uint8 IDX file (uncompressed): used by tests and to export dataset subsets. */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Uint8Array {
  const total = dims.reduce((a, b) => a * b, 1);
  if (total !== data.length) {
    throw new InputError(`encodeIdx: dims ${dims.join('×')} need ${total} bytes, got ${data.length}`);
  }
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.access(file);
    return true;
  } catch {
    return false;
  }
}

/** Fashion-MNIST split with its class names. */
export interface FashionMnist extends IdxDataset {
  split: 'train' | 'test';
  classes: readonly string[];
}

/**
 * Load a Fashion-MNIST split from `dir` (default: Debian's package location). Each file may be
 * gzipped (`*.gz`, as Debian ships them) or plain.
 */
export async function loadFashionMnist(split: 'train' | 'test', dir: string = FASHION_MNIST_DIR): Promise<FashionMnist> {
  const prefix = split === 'train' ? 'train' : 't10k';
  const find = async (base: string): Promise<string> => {
    for (const name of [`${base}.gz`, base]) {
      const file = path.join(dir, name);
      if (await exists(file)) return file;
    }
    throw fail({
      where: path.join(dir, `${base}.gz`),
      message: `Fashion-MNIST ${split} split not found`,
      expected: `${base}.gz or ${base} in ${dir}`,
      got: 'no such file',
      fix:
        dir === FASHION_MNIST_DIR
          ? 'apt-get install dataset-fashion-mnist (Debian/Ubuntu), or download the four *-ubyte.gz files and pass their folder'
          : `put the Fashion-MNIST files in ${dir}, or apt-get install dataset-fashion-mnist and use the default folder ${FASHION_MNIST_DIR}`,
    });
  };
  const imagesFile = await find(`${prefix}-images-idx3-ubyte`);
  const labelsFile = await find(`${prefix}-labels-idx1-ubyte`);
  const ds = await readIdxDataset(imagesFile, labelsFile);
  const bad = ds.labels.findIndex((l) => l >= FASHION_MNIST_CLASSES.length);
  if (bad >= 0) {
    throw fail({
      where: `${labelsFile}: label #${bad}`,
      expected: `a class index 0..${FASHION_MNIST_CLASSES.length - 1}`,
      got: String(ds.labels[bad]),
    });
  }
  return { ...ds, split, classes: FASHION_MNIST_CLASSES };
}

/**
 * Where each Fashion-MNIST class lands among a model's labels: `map[fashionMnistIndex]` is the
 * model's logit index. Matched by name under the label rule (src/data/labels.ts), never by
 * position, so a model trained with its labels in another order is scored right. Refuses labels
 * that name no Fashion-MNIST class, two labels for one class, and classes the model lacks.
 *
 * @example fashionMnistLabelMap(['Trouser', 'tshirt_top', …], 'model.onnx')[0] // 1
 */
export function fashionMnistLabelMap(labels: readonly string[], where: string): Int32Array {
  const fm = labelMatcher(FASHION_MNIST_CLASSES);
  const map = new Int32Array(FASHION_MNIST_CLASSES.length).fill(-1);
  const unknown: string[] = [];
  const twice: string[] = [];
  labels.forEach((label, i) => {
    const k = fm.indexOf(label);
    if (k === undefined) unknown.push(label);
    else if (map[k] !== -1) twice.push(`${JSON.stringify(labels[map[k]!])} and ${JSON.stringify(label)} both name ${JSON.stringify(FASHION_MNIST_CLASSES[k])}`);
    else map[k] = i;
  });
  const missing = FASHION_MNIST_CLASSES.filter((_, k) => map[k] === -1);
  if (unknown.length === 0 && twice.length === 0 && missing.length === 0) return map;
  const problems = [
    unknown.length ? `label${unknown.length === 1 ? '' : 's'} ${unknown.map((l) => JSON.stringify(l)).join(', ')} name${unknown.length === 1 ? 's' : ''} no Fashion-MNIST class` : '',
    ...twice,
    missing.length ? `no label for ${missing.map((l) => JSON.stringify(l)).join(', ')}` : '',
  ].filter(Boolean);
  throw fail({
    where: `${where}: edgeexit.labels`,
    message: `cannot map the model's labels onto the Fashion-MNIST classes by name: ${problems.join('; ')} (${LABEL_MATCH_RULE})`,
    expected: `the 10 Fashion-MNIST classes in any order: ${FASHION_MNIST_CLASSES.map((l) => JSON.stringify(l)).join(', ')}`,
    got: labels.map((l) => JSON.stringify(l)).join(', '),
    fix: 'name the labels after the Fashion-MNIST classes when exporting the model, or evaluate on an ImageFolder whose subfolders are named after its labels (--data <folder>)',
  });
}
