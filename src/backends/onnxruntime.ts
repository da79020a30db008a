// The one adapter between edgeexit and onnxruntime-node: sessions are created, fed and read only
// here, so the rest of the code sees plain typed arrays and never an ort.Tensor, and the
// execution-provider fallback (a laptop without CUDA, a Pi without a GPU) is decided in one place.
//
// onnxruntime-node 1.30 facts this module is built on (checked on linux-x64, CPU-only install):
//  - listSupportedBackends() names cpu, webgpu, cuda, tensorrt; cuda/tensorrt are `bundled: false`
//    (their provider libraries come from a separate download that `npm install` may skip).
//  - Asking for ['cuda','cpu'] without those libraries does NOT fall back: create() rejects with
//    "OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library" and the native
//    logger prints a red multi-line error. So the libraries are looked for before asking ORT.
//  - An EP name the build does not know (dml on Linux) makes onnxruntime-common print its own
//    console warning; those are filtered out before create() too.
//  - webgpu is bundled but fails at create() without a usable adapter ("Failed to get a WebGPU
//    adapter"), so start-up failures are also caught and the next provider tried.
//  - The session exposes inputNames/outputNames/inputMetadata/outputMetadata but NOT the model's
//    metadata_props: preprocess spec and labels must come from the ONNX codec (src/onnx).
//  - The public InferenceSession.run() calls the native session's synchronous run() one
//    setImmediate later (dist/backend.js): inference blocks the main thread either way, the hop
//    only adds latency — +7 µs p50 / +15 µs mean per run at batch 1 on the 2-vCPU x86 VM, i.e.
//    15–30 % of a small exit stage. So sessions are opened on the native binding directly when it
//    has the shape we expect (NATIVE_RUN below), and on the public API otherwise, with one line
//    saying so.
import ort from 'onnxruntime-node';
import { existsSync, promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { InputError, UnsupportedError, formatProblem, show } from '../util/errors.js';
import { dtypeFromCode } from '../onnx/dtype.js';

// ---------------------------------------------------------------------------------------------
// Execution-provider registry (data, not code paths)

export interface ProviderProbe {
  /** onnxruntime's name for it. */
  name: string;
  /** Provider libraries that must sit next to onnxruntime_binding.node, per platform. */
  libraries?: Partial<Record<NodeJS.Platform, string[]>>;
  /** Matches the error onnxruntime gives when this provider cannot start. */
  startFailure: RegExp;
  /** How to get it. */
  fix: string;
}

// Runtime probes (which library files prove a provider is installed, how its start-up failure
// reads); the facts about where each provider exists live in src/devices/registry.ts.
export const PROVIDER_PROBES: readonly ProviderProbe[] = Object.freeze([
  { name: 'cpu', startFailure: /$^/, fix: 'always available' },
  {
    name: 'cuda',
    libraries: {
      linux: ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'],
      win32: ['onnxruntime_providers_shared.dll', 'onnxruntime_providers_cuda.dll'],
    },
    startFailure: /AppendExecutionProvider_Cuda|\bCUDA\b|cudart|cudnn|cublas/i,
    fix: 'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install, with CUDA 12 and cuDNN 9; see README "GPU"',
  },
  {
    name: 'tensorrt',
    libraries: {
      linux: ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so'],
      win32: ['onnxruntime_providers_shared.dll', 'onnxruntime_providers_tensorrt.dll'],
    },
    startFailure: /AppendExecutionProvider_TensorRT|TensorRT|nvinfer/i,
    fix: 'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install, with CUDA 12, cuDNN 9 and TensorRT 10; see README "GPU"',
  },
  {
    name: 'webgpu',
    startFailure: /webgpu|WebGPU adapter|dawn/i,
    fix: 'needs GPU drivers with Vulkan (Linux), D3D12 (Windows) or Metal (macOS)',
  },
  { name: 'dml', startFailure: /\bdml\b|DirectML/i, fix: 'DirectML exists only in the Windows build' },
  { name: 'coreml', startFailure: /coreml/i, fix: 'CoreML exists only in the macOS build' },
  { name: 'qnn', startFailure: /\bqnn\b/i, fix: 'QNN exists only in Windows-on-Arm builds' },
]);

function providerInfo(name: string): ProviderProbe | undefined {
  return PROVIDER_PROBES.find((p) => p.name === name);
}

/** Folder holding onnxruntime_binding.node, where provider libraries must be. */
function bindingDir(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve('onnxruntime-node/package.json');
    return path.join(path.dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/** Execution providers this onnxruntime-node build knows, and whether their libraries are present. */
export function availableExecutionProviders(): { name: string; bundled: boolean; installed: boolean; missing: string[] }[] {
  const dir = bindingDir();
  return ort.listSupportedBackends().map((b) => {
    const libs = providerInfo(b.name)?.libraries?.[process.platform] ?? [];
    const missing = dir ? libs.filter((lib) => !existsSync(path.join(dir, lib))) : [];
    return { name: b.name, bundled: b.bundled, installed: missing.length === 0, missing };
  });
}

// ---------------------------------------------------------------------------------------------
// Plain tensors

export type TensorType = 'float32' | 'float64' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'int64' | 'uint64' | 'bool';

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | BigInt64Array
  | BigUint64Array;

/** A tensor as plain data: row-major values and their dims. */
export interface PlainTensor<D extends TypedArray = TypedArray> {
  data: D;
  dims: number[];
  /** Element type; inferred from `data` for inputs when omitted (Uint8Array → uint8). */
  type?: TensorType;
}

export interface OutputTensor extends PlainTensor {
  type: TensorType;
}

function inferType(data: TypedArray): TensorType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int16Array) return 'int16';
  if (data instanceof Uint16Array) return 'uint16';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return 'uint64';
}

/** An output as Float32Array (logits); throws when the model produced another type. */
export function asFloat32(t: OutputTensor, name = 'output'): PlainTensor<Float32Array> {
  if (!(t.data instanceof Float32Array)) {
    throw new UnsupportedError(`${name}: expected float32 logits, got ${t.type}`);
  }
  return { data: t.data, dims: t.dims, type: 'float32' };
}

// ---------------------------------------------------------------------------------------------
// Native run path (see the header): the binding's session, loaded once, checked for its shape.

interface NativeValueMetadata {
  name: string;
  isTensor: boolean;
  symbolicDimensions: string[];
  shape: number[];
  type: number;
}
interface NativeSession {
  loadModel(path: string, options: object): void;
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: object): void;
  readonly inputMetadata: NativeValueMetadata[];
  readonly outputMetadata: NativeValueMetadata[];
  run(feeds: Record<string, ort.Tensor>, fetches: Record<string, null>, options: object): Record<string, ort.Tensor>;
  endProfiling(): void;
  dispose(): void;
}
interface NativeBinding {
  binding: { InferenceSession: new () => NativeSession };
  initOrt: () => void;
}

let nativeBinding: NativeBinding | undefined;
/** Whether sessions run on the native binding, and why not when they do not. */
export const NATIVE_RUN: { available: boolean; reason: string } = (() => {
  try {
    const req = createRequire(import.meta.url);
    const mod = req(req.resolve('onnxruntime-node').replace(/index\.js$/, 'binding.js')) as Partial<NativeBinding>;
    const S = mod.binding?.InferenceSession;
    if (typeof mod.initOrt !== 'function' || typeof S !== 'function') return { available: false, reason: 'dist/binding.js has no InferenceSession/initOrt' };
    for (const m of ['loadModel', 'run', 'dispose', 'endProfiling'] as const) {
      if (typeof (S.prototype as unknown as Record<string, unknown>)[m] !== 'function') return { available: false, reason: `the native session has no ${m}()` };
    }
    nativeBinding = mod as NativeBinding;
    return { available: true, reason: 'native binding' };
  } catch (err) {
    return { available: false, reason: `dist/binding.js did not load (${(err as Error).message.split('\n')[0]})` };
  }
})();
let nativeNoted = false;
/** Force the public API (tests compare both paths; EDGEEXIT_ORT_RUN=public does it for a process). */
export function useNativeRun(): boolean {
  return NATIVE_RUN.available && process.env.EDGEEXIT_ORT_RUN !== 'public';
}


/** What createSession needs of an onnxruntime session, whichever path opened it. */
interface OrtHandle {
  inputNames: readonly string[];
  outputNames: readonly string[];
  inputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  outputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  run(feeds: Record<string, ort.Tensor>, fetches: readonly string[]): Promise<Record<string, ort.Tensor>> | Record<string, ort.Tensor>;
  endProfiling(): void;
  release(): Promise<void>;
}

function nativeMetadata(list: readonly NativeValueMetadata[]): ort.InferenceSession.ValueMetadata[] {
  return list.map((m) =>
    m.isTensor
      ? ({
          name: m.name,
          isTensor: true,
          // The binding reports ONNX TensorProto codes; our dtype names are onnxruntime-common's for every type it supports.
          type: (dtypeFromCode(m.type) ?? `dtype${m.type}`) as ort.Tensor.Type,
          shape: m.shape.map((d, i) => (d === -1 ? (m.symbolicDimensions[i] ?? '?') : d)),
        } as ort.InferenceSession.ValueMetadata)
      : ({ name: m.name, isTensor: false } as ort.InferenceSession.ValueMetadata),
  );
}

async function openOrt(model: string | Uint8Array, opts: ort.InferenceSession.SessionOptions, warn: (line: string) => void): Promise<OrtHandle> {
  if (useNativeRun()) {
    const b = nativeBinding!;
    b.initOrt();
    const s = new b.binding.InferenceSession();
    if (typeof model === 'string') s.loadModel(model, opts);
    else s.loadModel(model.buffer, model.byteOffset, model.byteLength, opts);
    const inputMetadata = nativeMetadata(s.inputMetadata);
    const outputMetadata = nativeMetadata(s.outputMetadata);
    const fetchCache = new Map<string, Record<string, null>>();
    return {
      inputNames: inputMetadata.map((m) => m.name),
      outputNames: outputMetadata.map((m) => m.name),
      inputMetadata,
      outputMetadata,
      run(feeds, fetches) {
        const key = fetches.join('\u0000');
        let f = fetchCache.get(key);
        if (!f) fetchCache.set(key, (f = Object.fromEntries(fetches.map((n) => [n, null]))));
        return s.run(feeds, f, {});
      },
      endProfiling: () => s.endProfiling(),
      release: async () => s.dispose(),
    };
  }
  if (!nativeNoted && process.env.EDGEEXIT_ORT_RUN !== 'public') {
    nativeNoted = true;
    warn(`onnxruntime: native run path skipped (${NATIVE_RUN.reason}); using the public API, ~10 µs more per stage run`);
  }
  const s = await ort.InferenceSession.create(model as never, opts);
  return {
    inputNames: s.inputNames,
    outputNames: s.outputNames,
    inputMetadata: s.inputMetadata,
    outputMetadata: s.outputMetadata,
    run: (feeds, fetches) => s.run(feeds, [...fetches]) as Promise<Record<string, ort.Tensor>>,
    endProfiling: () => s.endProfiling(),
    release: () => s.release(),
  };
}

// ---------------------------------------------------------------------------------------------
// Sessions

export interface SessionOptions {
  /** Providers in order of preference (default ['cpu']); ones that cannot start are skipped. */
  executionProviders?: (string | { name: string; [option: string]: unknown })[];
  /** When every requested provider is skipped, run on 'cpu' (default) instead of failing. */
  fallbackToCpu?: boolean;
  intraOpNumThreads?: number;
  interOpNumThreads?: number;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'layout' | 'all';
  executionMode?: 'sequential' | 'parallel';
  enableProfiling?: boolean;
  /** Path prefix of the profile JSON (onnxruntime appends `_<timestamp>.json`). */
  profileFilePrefix?: string;
  /** onnxruntime's own log level for this session: 0 verbose … 4 fatal. */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  /** Receives one line per skipped provider. Default: written to stderr. */
  onWarning?: (line: string) => void;
}

export interface ValueInfo {
  name: string;
  /** Element type, or 'non-tensor' for sequences/maps. */
  type: string;
  /** Static sizes as numbers, symbolic ones (e.g. 'batch') as strings; empty when unknown. */
  shape: (number | string)[];
}

export interface SkippedProvider {
  name: string;
  reason: string;
}

export interface ModelSession {
  /** The model path, or '<bytes>' when created from memory. */
  readonly source: string;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  /** Providers the session was created with, after skipping unavailable ones. */
  readonly executionProviders: readonly string[];
  readonly skipped: readonly SkippedProvider[];
  /** Run the model; `outputs` limits which outputs are computed and returned (default all). */
  run(feeds: Record<string, PlainTensor>, outputs?: readonly string[]): Promise<Record<string, OutputTensor>>;
  /** Stop profiling and return the profile file onnxruntime wrote (undefined when not profiling). */
  endProfiling(): Promise<string | undefined>;
  close(): Promise<void>;
}

function epName(ep: string | { name: string }): string {
  return (typeof ep === 'string' ? ep : ep.name).toLowerCase();
}

function warningLine(s: SkippedProvider, using: string): string {
  return `warn: execution provider '${s.name}' skipped: ${s.reason} — using '${using}'`;
}

// onnxruntime's messages start with a source location and C++ signature; keep the readable tail.
function cleanOrtMessage(err: unknown): string {
  let msg = ((err as Error)?.message ?? String(err)).split('\n')[0]!.trim();
  msg = msg.replace(/^\S+\.(?:cc|cpp|h):\d+\s+/, '');
  const tail = msg.lastIndexOf(' was false. ');
  if (tail >= 0) msg = msg.slice(tail + ' was false. '.length);
  return msg;
}

function modelLoadError(source: string, err: unknown): InputError {
  const msg = cleanOrtMessage(err);
  const p = {
    where: source,
    message: `cannot load ONNX model (${msg})`,
    fix: /doesn't exist|No such file/i.test(msg) ? 'check the path' : 'is it a complete .onnx file?',
  };
  return new InputError(formatProblem(p), [p], { cause: err });
}

/**
 * Create an inference session from a model path or its bytes. Requested execution providers
 * that this machine cannot use are skipped with one warning line each; see SessionOptions.
 */
export async function createSession(model: string | Uint8Array, options: SessionOptions = {}): Promise<ModelSession> {
  const source = typeof model === 'string' ? model : '<bytes>';
  const warn = options.onWarning ?? ((line: string) => process.stderr.write(line + '\n'));
  const requested = options.executionProviders?.length ? options.executionProviders : ['cpu'];

  // 1. Drop providers this build cannot have, without asking onnxruntime (see header).
  const known = new Map(availableExecutionProviders().map((p) => [p.name, p]));
  const skipped: SkippedProvider[] = [];
  let candidates: (string | { name: string; [option: string]: unknown })[] = [];
  for (const ep of requested) {
    const name = epName(ep);
    if (candidates.some((c) => epName(c) === name)) continue;
    const avail = known.get(name);
    if (!avail) {
      skipped.push({
        name,
        reason: `not available in this onnxruntime-node build (it has: ${[...known.keys()].join(', ')})`,
      });
    } else if (!avail.installed) {
      skipped.push({
        name,
        reason: `not available in this onnxruntime-node build (${avail.missing.join(', ')} not installed; ${
          providerInfo(name)?.fix ?? 'install the provider libraries'
        })`,
      });
    } else {
      candidates.push(typeof ep === 'string' ? name : { ...ep, name });
    }
  }

  const base: ort.InferenceSession.SessionOptions = {};
  if (options.intraOpNumThreads !== undefined) base.intraOpNumThreads = options.intraOpNumThreads;
  if (options.interOpNumThreads !== undefined) base.interOpNumThreads = options.interOpNumThreads;
  if (options.graphOptimizationLevel !== undefined) base.graphOptimizationLevel = options.graphOptimizationLevel;
  if (options.executionMode !== undefined) base.executionMode = options.executionMode;
  if (options.logSeverityLevel !== undefined) base.logSeverityLevel = options.logSeverityLevel;
  let profileDir: string | undefined;
  let profileBase = '';
  let profileBefore = new Set<string>();
  if (options.enableProfiling) {
    base.enableProfiling = true;
    const prefix = options.profileFilePrefix ?? 'onnxruntime_profile';
    base.profileFilePrefix = prefix;
    profileDir = path.dirname(path.resolve(prefix));
    profileBase = path.basename(prefix);
    await fsp.mkdir(profileDir, { recursive: true });
    profileBefore = new Set(await fsp.readdir(profileDir));
  }

  // 2. Let onnxruntime try the rest; a provider that fails to start is dropped and we retry.
  let session: OrtHandle | undefined;
  const fallback = options.fallbackToCpu ?? true;
  for (;;) {
    if (candidates.length === 0) {
      if (!fallback) {
        throw new UnsupportedError(
          `${source}: none of the requested execution providers can run here: ` +
            skipped.map((s) => `'${s.name}' (${s.reason})`).join('; '),
        );
      }
      candidates = ['cpu'];
    }
    try {
      const opts = { ...base, executionProviders: candidates as ort.InferenceSession.ExecutionProviderConfig[] };
      session = await openOrt(model, opts, warn);
      break;
    } catch (err) {
      const msg = cleanOrtMessage(err);
      const culprit = candidates.find((c) => providerInfo(epName(c))?.startFailure.test(msg));
      if (!culprit || epName(culprit) === 'cpu') throw modelLoadError(source, err);
      skipped.push({ name: epName(culprit), reason: `failed to start (${msg})` });
      candidates = candidates.filter((c) => c !== culprit);
    }
  }
  const used = candidates.map(epName);
  for (const s of skipped) warn(warningLine(s, used[0]!));

  const toInfo = (m: ort.InferenceSession.ValueMetadata): ValueInfo =>
    m.isTensor ? { name: m.name, type: m.type, shape: [...m.shape] } : { name: m.name, type: 'non-tensor', shape: [] };
  const inputs = session.inputMetadata.map(toInfo);
  const outputs = session.outputMetadata.map(toInfo);
  const s = session;
  const inputSet = new Set(s.inputNames);
  const outputSet = new Set(s.outputNames);
  // Output lists already checked, by identity: callers (the cascades) pass the same arrays on
  // every call, and at batch 1 a stage run is ~40 µs, so per-call checks must cost next to nothing.
  const checkedOutputs = new WeakSet<readonly string[]>();

  return {
    source,
    inputNames: [...s.inputNames],
    outputNames: [...s.outputNames],
    inputs,
    outputs,
    executionProviders: used,
    skipped,
    async run(feeds, wanted) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const info of inputs) {
        const t = feeds[info.name];
        if (!t) {
          throw new InputError(
            `${source}: missing input '${info.name}' (model inputs: ${s.inputNames.join(', ')}; got: ${
              Object.keys(feeds).join(', ') || 'none'
            })`,
          );
        }
        checkDims(source, info, t);
        ortFeeds[info.name] = new ort.Tensor(t.type ?? inferType(t.data), t.data as never, t.dims);
      }
      let fed = 0;
      for (const _ in feeds) fed++;
      if (fed !== inputs.length) {
        // Every model input was found above, so the surplus are names the model does not have.
        const extra = Object.keys(feeds).filter((k) => !inputSet.has(k));
        throw new InputError(`${source}: unknown input ${extra.map((e) => show(e)).join(', ')} (model inputs: ${s.inputNames.join(', ')})`);
      }
      const names = wanted ?? s.outputNames;
      if (!checkedOutputs.has(names)) {
        const unknown = names.filter((n) => !outputSet.has(n));
        if (unknown.length > 0) {
          throw new InputError(`${source}: unknown output ${unknown.map((e) => show(e)).join(', ')} (model outputs: ${s.outputNames.join(', ')})`);
        }
        checkedOutputs.add(names);
      }
      let result: Record<string, ort.Tensor>;
      try {
        result = await s.run(ortFeeds, names);
      } catch (err) {
        throw new InputError(`${source}: inference failed (${cleanOrtMessage(err)})`, [], {
          cause: err,
        });
      }
      const out: Record<string, OutputTensor> = {};
      for (const n of names) {
        const v = result[n] as ort.Tensor | undefined;
        if (!v) continue;
        out[n] = { data: v.data as TypedArray, dims: [...v.dims], type: v.type as TensorType };
      }
      return out;
    },
    async endProfiling() {
      if (!profileDir) return undefined;
      s.endProfiling();
      const now = (await fsp.readdir(profileDir)).filter(
        (f) => f.startsWith(profileBase) && f.endsWith('.json') && !profileBefore.has(f),
      );
      now.sort();
      const file = now.at(-1);
      return file ? path.join(profileDir, file) : undefined;
    },
    async close() {
      await s.release();
    },
  };
}

function checkDims(source: string, info: ValueInfo, t: PlainTensor): void {
  const count = t.dims.reduce((a, b) => a * b, 1);
  const bad =
    t.dims.some((d) => !Number.isInteger(d) || d < 0) ||
    count !== t.data.length ||
    (info.shape.length > 0 &&
      (t.dims.length !== info.shape.length || info.shape.some((d, i) => typeof d === 'number' && d !== t.dims[i])));
  if (bad) {
    throw new InputError(
      formatProblem({
        where: `${source}: input '${info.name}'`,
        expected: `dims [${info.shape.join(',')}] (${info.type})`,
        got: `dims [${t.dims.join(',')}] with ${t.data.length} values`,
      }),
    );
  }
}

/** The onnxruntime-node version in use, as the package reports it (for births and reports). */
export function onnxruntimeVersion(): string | undefined {
  return ort.env.versions.node || undefined;
}
