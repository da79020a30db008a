// Golden I/O: a few inputs and what each stage answered to them when the compiler wrote the
// bundle. A device runs the same inputs through the stages it is about to switch to and compares
// (agent/selftest.ts): a stage that loads but computes something else (a kernel bug on this CPU,
// a wrong build of onnxruntime, a damaged model that still parses) is caught before it serves.
//
// golden.bin: the magic `EEGOLD1\n`, a little-endian u32 length, that many bytes of JSON header,
// then float32 little-endian data. The header lists every tensor with its dims and its offset in
// elements into the data. One input tensor (the image batch), one output tensor per stage.
// The chain (which tensor feeds which stage) lives here, without onnxruntime, so the compiler
// that records and the device that checks cannot feed the stages differently.
import { InputError, formatProblem } from '../util/errors.js';
import type { Manifest } from './manifest.js';

export const GOLDEN_FILE = 'golden.bin';
const MAGIC = new TextEncoder().encode('EEGOLD1\n');

/** A float tensor, as golden.bin stores it. */
export interface GoldenTensor {
  dims: number[];
  data: Float32Array;
}

export interface GoldenRecord {
  input: GoldenTensor;
  /** Per stage index: its compared output (absent for a stage the chain could not feed). */
  outputs: Map<number, { name: string; tensor: GoldenTensor }>;
}

interface HeaderEntry {
  role: 'input' | 'output';
  stage?: number;
  name: string;
  dims: number[];
  offset: number;
}

/**
 * golden.bin bytes of a record.
 *
 * @example
 * ```ts
 * import { encodeGolden, decodeGolden } from 'edgeexit/bundle';
 * const bytes = encodeGolden({ input: { dims: [1, 2], data: new Float32Array([1, 2]) }, outputs: new Map() });
 * decodeGolden(bytes).input.dims; // [1, 2]
 * ```
 */
export function encodeGolden(r: GoldenRecord): Uint8Array {
  const entries: HeaderEntry[] = [];
  const tensors: Float32Array[] = [];
  let offset = 0;
  const add = (e: Omit<HeaderEntry, 'offset'>, data: Float32Array): void => {
    entries.push({ ...e, offset });
    tensors.push(data);
    offset += data.length;
  };
  add({ role: 'input', name: 'input', dims: r.input.dims }, r.input.data);
  for (const [stage, o] of [...r.outputs.entries()].sort((a, b) => a[0] - b[0])) add({ role: 'output', stage, name: o.name, dims: o.tensor.dims }, o.tensor.data);
  const header = new TextEncoder().encode(JSON.stringify({ tensors: entries }));
  // Data starts on a 4-byte boundary so it can be viewed as float32 in place.
  const pad = (4 - ((MAGIC.length + 4 + header.length) % 4)) % 4;
  const dataStart = MAGIC.length + 4 + header.length + pad;
  const out = new Uint8Array(dataStart + offset * 4);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(MAGIC.length, header.length + pad, true);
  out.set(header, MAGIC.length + 4);
  out.fill(0x20, MAGIC.length + 4 + header.length, dataStart);
  const view = new DataView(out.buffer, dataStart);
  let at = 0;
  for (const t of tensors) for (const v of t) view.setFloat32(4 * at++, v, true);
  return out;
}

function bad(file: string, message: string): InputError {
  return new InputError(formatProblem({ where: file, message, expected: 'golden.bin as `edgeexit compile` writes it', fix: 're-compile the bundle' }));
}

/**
 * Read golden.bin; throws InputError naming the file for anything malformed.
 *
 * @example
 * ```ts
 * import { decodeGolden } from 'edgeexit/bundle';
 * const g = decodeGolden(files.get('golden.bin')!);
 * console.log(g.input.dims, [...g.outputs.keys()]);
 * ```
 */
export function decodeGolden(bytes: Uint8Array, file = GOLDEN_FILE): GoldenRecord {
  if (bytes.length < MAGIC.length + 4 || MAGIC.some((b, i) => bytes[i] !== b)) throw bad(file, 'does not start with the golden magic');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getUint32(MAGIC.length, true);
  const dataStart = MAGIC.length + 4 + headerLen;
  if (dataStart > bytes.length) throw bad(file, 'header runs past the end of the file');
  let entries: HeaderEntry[];
  try {
    entries = (JSON.parse(new TextDecoder().decode(bytes.subarray(MAGIC.length + 4, dataStart))) as { tensors: HeaderEntry[] }).tensors;
  } catch (err) {
    throw bad(file, `header is not JSON (${(err as Error).message})`);
  }
  const total = (bytes.length - dataStart) / 4;
  const read = (e: HeaderEntry): GoldenTensor => {
    const n = e.dims.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(total) || e.offset + n > total) throw bad(file, `tensor '${e.name}' runs past the end of the data`);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(dataStart + 4 * (e.offset + i), true);
    return { dims: [...e.dims], data };
  };
  const inputEntry = entries.find((e) => e.role === 'input');
  if (!inputEntry) throw bad(file, 'has no input tensor');
  const outputs = new Map<number, { name: string; tensor: GoldenTensor }>();
  for (const e of entries) if (e.role === 'output' && e.stage !== undefined) outputs.set(e.stage, { name: e.name, tensor: read(e) });
  return { input: read(inputEntry), outputs };
}

/** A tensor passed along the chain: float32 exits are compared; hand-overs of other types (fp16 carries) pass through as they are. */
export interface ChainTensor {
  dims: number[];
  data: unknown;
  type?: string;
}

/** Runs one stage on named feeds; returns its outputs by name. */
export type GoldenStageRun = (stage: number, feeds: Record<string, ChainTensor>) => Promise<Record<string, ChainTensor>>;

/**
 * Feed `input` through the bundle's stages in manifest order, as the runtime chains them: a stage
 * reads the image, or what an earlier stage handed over; a CBNet classifier reads the image
 * (its classifier<-image exit point). Returns each stage's exit output, and the time of each run.
 *
 * @example
 * ```ts
 * import { runGoldenChain } from 'edgeexit/bundle';
 * const { outputs } = await runGoldenChain(manifest, input, async (k, feeds) => sessions[k].run(feeds));
 * ```
 */
export async function runGoldenChain(manifest: Manifest, input: GoldenTensor, run: GoldenStageRun): Promise<{ outputs: Map<number, { name: string; tensor: GoldenTensor }>; ms: Map<number, number> }> {
  const known = new Map<string, ChainTensor>([[manifest.input.name, input]]);
  const p = manifest.pipeline;
  const imageFed = new Set([p?.converter.input, p?.classifier.input].filter((x): x is string => x !== undefined));
  const outputs = new Map<number, { name: string; tensor: GoldenTensor }>();
  const ms = new Map<number, number>();
  for (const [k, s] of manifest.stages.entries()) {
    const feeds: Record<string, ChainTensor> = {};
    for (const name of s.inputs) {
      const t = known.get(name) ?? (imageFed.has(name) ? input : undefined);
      if (t) feeds[name] = t;
    }
    if (Object.keys(feeds).length !== s.inputs.length) continue;
    const t0 = performance.now();
    const out = await run(k, feeds);
    ms.set(k, performance.now() - t0);
    for (const [name, t] of Object.entries(out)) known.set(name, t);
    const exit = out[s.exit];
    if (exit && exit.data instanceof Float32Array) outputs.set(k, { name: s.exit, tensor: { dims: [...exit.dims], data: exit.data } });
  }
  return { outputs, ms };
}

/**
 * Compare `got` with `expected` element by element under atol + rtol·|expected|: whether every
 * element is within, the worst one's index, and the largest absolute difference. NaN fails.
 *
 * @example
 * ```ts
 * import { compareGolden } from 'edgeexit/bundle';
 * const c = compareGolden(got, expected, 1e-3, 1e-3);
 * if (!c.ok) console.error(`element ${c.worstIndex} off by up to ${c.maxAbsDiff}`);
 * ```
 */
export function compareGolden(got: GoldenTensor, expected: GoldenTensor, atol: number, rtol: number): { ok: boolean; worstIndex: number; maxAbsDiff: number; reason?: string } {
  if (got.dims.join('x') !== expected.dims.join('x')) return { ok: false, worstIndex: -1, maxAbsDiff: Infinity, reason: `shape ${got.dims.join('x')}, expected ${expected.dims.join('x')}` };
  let worst = -1;
  let worstExcess = -Infinity;
  let maxAbsDiff = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const e = expected.data[i]!;
    const d = Math.abs(got.data[i]! - e);
    // NaN in either fails: it never compares below a bound.
    const excess = Number.isNaN(d) ? Infinity : d - (atol + rtol * Math.abs(e));
    if (d > maxAbsDiff || Number.isNaN(d)) maxAbsDiff = Number.isNaN(d) ? Infinity : d;
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
  }
  return { ok: worstExcess <= 0, worstIndex: worst, maxAbsDiff };
}
