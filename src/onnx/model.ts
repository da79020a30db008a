// Reading and writing .onnx files: decode with a clear error for anything that is not a complete
// ModelProto, load and write external tensor data, and keep everything we do not understand
// (unknown fields, newer enum values) so that a read → write round trip loses nothing.
import { fromBinary, toBinary, create, isFieldSet } from '@bufbuild/protobuf';
import { promises as fsp, openSync, readSync, closeSync, fstatSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { InputError, OnnxFormatError, UnsupportedError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import {
  ModelProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type SparseTensorProto,
  type TensorProto,
} from './gen/onnx_pb.js';
import { findWireProblem } from './wire.js';
import { dtypeFromCode, rawByteLength } from './dtype.js';
import { elementCount, isExternal, tensorRawBytes } from './tensor.js';

const EXPECTED = 'expected a ModelProto as written by torch.onnx.export or onnx.save';
/** Protobuf messages cannot exceed 2 GiB; bigger models must keep weights in external data. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;

/** One tensor whose bytes came from (or went to) an external data file. */
export interface ExternalTensorRef {
  /** Path of the tensor inside the model, e.g. `graph.initializer[3] 'fc.weight'`. */
  where: string;
  name: string;
  location: string;
  offset: number;
  length: number;
}

/** A decoded ONNX model. `proto` is the generated message, for anything the accessors do not cover. */
export class OnnxModel {
  /**
   * @param proto  the ModelProto; must have a graph (decodeModel guarantees it).
   * @param source the file it came from or a label for messages.
   * @param baseDir folder that external data locations are relative to.
   * @param externalTensors tensors whose bytes were loaded from external files when decoding.
   */
  constructor(
    readonly proto: ModelProto,
    readonly source = '<model>',
    readonly baseDir?: string,
    readonly externalTensors: readonly ExternalTensorRef[] = [],
  ) {
    if (!proto.graph) throw new OnnxFormatError(`${source}: ModelProto has no graph; ${EXPECTED}`);
  }

  /** Build a model from a ModelProto made in code. */
  static fromProto(proto: ModelProto, source = '<model>'): OnnxModel {
    return new OnnxModel(proto, source);
  }

  get graph(): GraphProto {
    return this.proto.graph!;
  }

  get irVersion(): number {
    return Number(this.proto.irVersion);
  }
  set irVersion(v: number) {
    this.proto.irVersion = BigInt(v);
  }

  get producerName(): string {
    return this.proto.producerName;
  }
  set producerName(v: string) {
    this.proto.producerName = v;
  }

  get producerVersion(): string {
    return this.proto.producerVersion;
  }
  set producerVersion(v: string) {
    this.proto.producerVersion = v;
  }

  get domain(): string {
    return this.proto.domain;
  }

  get modelVersion(): number {
    return Number(this.proto.modelVersion);
  }

  get docString(): string {
    return this.proto.docString;
  }

  /** The operator sets the model imports; domain '' is the default ONNX set (ai.onnx). */
  get opsetImports(): { domain: string; version: number }[] {
    return this.proto.opsetImport.map((o) => ({ domain: o.domain, version: Number(o.version) }));
  }

  /** Imported version of an operator set ('' and 'ai.onnx' are the same set); undefined when not imported. */
  opsetVersion(domain = ''): number | undefined {
    const want = domain === 'ai.onnx' ? '' : domain;
    const hit = this.proto.opsetImport.find((o) => (o.domain === 'ai.onnx' ? '' : o.domain) === want);
    return hit ? Number(hit.version) : undefined;
  }

  setOpsetVersion(domain: string, version: number): void {
    const hit = this.proto.opsetImport.find((o) => o.domain === domain);
    if (hit) hit.version = BigInt(version);
    else this.proto.opsetImport.push(create(OperatorSetIdProtoSchema, { domain, version: BigInt(version) }));
  }

  /** metadata_props as an object (a later duplicate key wins, as onnxruntime reads them). */
  get metadata(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.proto.metadataProps) out[e.key] = e.value;
    return out;
  }

  getMetadata(key: string): string | undefined {
    let value: string | undefined;
    for (const e of this.proto.metadataProps) if (e.key === key) value = e.value;
    return value;
  }

  /** Set (or with `undefined`, remove) a metadata_props entry; keeps the order of the others. */
  setMetadata(key: string, value: string | undefined): void {
    const props = this.proto.metadataProps;
    const first = props.findIndex((e) => e.key === key);
    // Drop duplicates so the key has exactly one value afterwards.
    for (let i = props.length - 1; i > first; i--) if (props[i]!.key === key) props.splice(i, 1);
    if (value === undefined) {
      if (first >= 0) props.splice(first, 1);
    } else if (first >= 0) {
      props[first]!.value = value;
    } else {
      props.push(create(StringStringEntryProtoSchema, { key, value }));
    }
  }
}

// ---- walking every tensor of a model ----

/** A tensor found somewhere in a model, with a readable path for messages. */
export interface TensorSite {
  tensor: TensorProto;
  where: string;
}

function tensorsOfAttribute(a: AttributeProto, where: string, out: TensorSite[]): void {
  const at = `${where}.attribute '${a.name}'`;
  if (a.t) out.push({ tensor: a.t, where: `${at}.t` });
  a.tensors.forEach((t, i) => out.push({ tensor: t, where: `${at}.tensors[${i}]` }));
  if (a.sparseTensor) tensorsOfSparse(a.sparseTensor, `${at}.sparse_tensor`, out);
  a.sparseTensors.forEach((s, i) => tensorsOfSparse(s, `${at}.sparse_tensors[${i}]`, out));
  if (a.g) tensorsOfGraph(a.g, `${at}.g`, out);
  a.graphs.forEach((g, i) => tensorsOfGraph(g, `${at}.graphs[${i}]`, out));
}

function tensorsOfSparse(s: SparseTensorProto, where: string, out: TensorSite[]): void {
  if (s.values) out.push({ tensor: s.values, where: `${where}.values` });
  if (s.indices) out.push({ tensor: s.indices, where: `${where}.indices` });
}

function tensorsOfGraph(g: GraphProto, where: string, out: TensorSite[]): void {
  g.initializer.forEach((t, i) => out.push({ tensor: t, where: `${where}.initializer[${i}]` }));
  g.sparseInitializer.forEach((s, i) => tensorsOfSparse(s, `${where}.sparse_initializer[${i}]`, out));
  g.node.forEach((n, i) => n.attribute.forEach((a) => tensorsOfAttribute(a, `${where}.node[${i}] '${n.name || n.opType}'`, out)));
}

/** Every TensorProto in the model: initializers, Constant values, subgraphs, functions, training graphs. */
export function allTensors(proto: ModelProto): TensorSite[] {
  const out: TensorSite[] = [];
  if (proto.graph) tensorsOfGraph(proto.graph, 'graph', out);
  proto.functions.forEach((f, i) =>
    f.node.forEach((n, j) => n.attribute.forEach((a) => tensorsOfAttribute(a, `functions[${i}] '${f.name}'.node[${j}]`, out))),
  );
  proto.trainingInfo.forEach((t, i) => {
    if (t.initialization) tensorsOfGraph(t.initialization, `training_info[${i}].initialization`, out);
    if (t.algorithm) tensorsOfGraph(t.algorithm, `training_info[${i}].algorithm`, out);
  });
  return out;
}

// ---- decoding ----

export interface DecodeOptions {
  /** Folder that external data locations are relative to (the model's folder). Without it, external tensors stay unloaded. */
  baseDir?: string;
  /** Name used in error messages (readModel passes the file path). */
  source?: string;
  /** Load external tensor data when baseDir is given (default true). */
  loadExternalData?: boolean;
}

export interface ReadOptions {
  /** Load external tensor data from next to the model (default true). */
  loadExternalData?: boolean;
}

/** What the first bytes look like, for "not an ONNX model" messages. */
function sniff(bytes: Uint8Array): string | undefined {
  const starts = (...sig: number[]) => sig.every((b, i) => bytes[i] === b);
  const ascii = (s: string) => starts(...[...s].map((c) => c.charCodeAt(0)));
  if (starts(0x89, 0x50, 0x4e, 0x47)) return 'a PNG image';
  if (starts(0xff, 0xd8, 0xff)) return 'a JPEG image';
  if (ascii('GIF8')) return 'a GIF image';
  if (ascii('%PDF')) return 'a PDF document';
  if (starts(0x50, 0x4b, 0x03, 0x04)) return 'a ZIP archive (a PyTorch .pt/.pth checkpoint is one; export it with torch.onnx.export)';
  if (starts(0x1f, 0x8b)) return 'gzip-compressed data (decompress it first)';
  if (starts(0x7f, 0x45, 0x4c, 0x46)) return 'an ELF executable';
  if (bytes.length >= 8 && String.fromCharCode(...bytes.subarray(4, 8)) === 'TFL3') return 'a TensorFlow Lite model';
  if (bytes[0] === 0x80 && bytes[1] !== undefined && bytes[1] >= 2 && bytes[1] <= 5) return 'a Python pickle';
  const head = bytes.subarray(0, 512);
  let printable = 0;
  for (const b of head) if (b === 9 || b === 10 || b === 13 || (b >= 0x20 && b < 0x7f) || b >= 0x80) printable++;
  if (head.length > 0 && printable === head.length) {
    const text = new TextDecoder().decode(head).trimStart();
    if (/^ir_version\s*:/.test(text) || /^<\s*ir_version/.test(text)) return 'ONNX text format (convert it to a binary .onnx with onnx.parser / onnx.save)';
    if (text.startsWith('{') || text.startsWith('[')) return 'a JSON text file';
    return 'a text file';
  }
  return undefined;
}

function formatError(
  source: string,
  bytes: Uint8Array,
  detail: string,
  opts: { truncated?: boolean; what?: string; cause?: unknown } = {},
): OnnxFormatError {
  const hint = sniff(bytes);
  const what = opts.what ?? (opts.truncated && !hint ? 'truncated or damaged ONNX model' : 'not an ONNX model');
  let msg = `${source}: ${what} (${detail}); ${EXPECTED}`;
  if (hint) msg += `; the file looks like ${hint}`;
  else if (opts.truncated) msg += `; the file is ${bytes.length} bytes: was the download or copy cut short?`;
  return new OnnxFormatError(msg, [{ where: source, expected: 'a binary ONNX ModelProto', got: hint ?? detail }], { cause: opts.cause });
}

function wireDetail(p: { offset: number; path: string; reason: string }): string {
  return `protobuf decode failed at byte ${p.offset}${p.path ? ` in ${p.path}` : ''}: ${p.reason}`;
}

/** Decode ONNX bytes; external tensors are loaded when `baseDir` is given. */
export function decodeModel(bytes: Uint8Array, opts: DecodeOptions = {}): OnnxModel {
  const source = opts.source ?? '<bytes>';
  // Decoded bytes fields are views into the input; make them plain Uint8Arrays, not Buffers
  // (Buffer#slice returns a view where callers expect Uint8Array#slice's copy).
  if (Buffer.isBuffer(bytes)) bytes = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length === 0) throw new OnnxFormatError(`${source}: empty file (0 bytes); ${EXPECTED}`);
  let proto: ModelProto;
  try {
    proto = fromBinary(ModelProtoSchema, bytes);
  } catch (err) {
    // The decoder's own message has no position; walk the bytes again to find where and why.
    const p = findWireProblem(bytes, ModelProtoSchema);
    const detail = p ? wireDetail(p) : `protobuf decode failed: ${(err as Error).message}`;
    throw formatError(source, bytes, detail, { truncated: p?.truncated ?? false, cause: err });
  }
  checkPlausible(proto, bytes, source);
  const load = opts.baseDir !== undefined && opts.loadExternalData !== false;
  return new OnnxModel(proto, source, opts.baseDir, load ? loadExternalData(proto, opts.baseDir!, source) : []);
}

/**
 * Random bytes (and some text) can decode as a protobuf message; a real model has ir_version,
 * opset_import and a graph, and no field we know is missing while unknown ones abound.
 */
function checkPlausible(proto: ModelProto, bytes: Uint8Array, source: string): void {
  const has = (f: keyof typeof ModelProtoSchema.field) => isFieldSet(proto, ModelProtoSchema.field[f]);
  const known = (Object.keys(ModelProtoSchema.field) as (keyof typeof ModelProtoSchema.field)[]).filter(has);
  if (known.length === 0) {
    throw formatError(source, bytes, 'it decodes as protobuf but has none of the ModelProto fields');
  }
  if (!has('irVersion')) {
    throw formatError(source, bytes, 'ModelProto.ir_version (field 1) is missing');
  }
  const ir = proto.irVersion;
  if (ir < 1n || ir > 1000n) {
    throw formatError(source, bytes, `ModelProto.ir_version is ${ir}, not a plausible IR version (1 to 13 today)`);
  }
  if (!proto.graph) {
    throw formatError(source, bytes, 'the ModelProto has no graph (field 7)', { what: 'ONNX model without a graph' });
  }
  if (proto.opsetImport.length === 0 && ir >= 3n) {
    throw new OnnxFormatError(
      `${source}: ONNX model (IR ${ir}) has no opset_import; every model since IR 3 must import at least the default operator set; ${EXPECTED}`,
    );
  }
}

/** Parse the external_data entries of a tensor. */
function externalRef(t: TensorProto, where: string, source: string): { location: string; offset: number; length?: number } {
  const get = (k: string) => t.externalData.find((e) => e.key === k)?.value;
  const location = get('location');
  if (!location) {
    throw new OnnxFormatError(`${source}: ${where} is marked EXTERNAL but has no 'location' in external_data; expected a file name relative to the model`);
  }
  const num = (k: string): number | undefined => {
    const v = get(k);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v.trim())) throw new OnnxFormatError(`${source}: ${where}: external_data '${k}' is ${JSON.stringify(v)}; expected a non-negative integer`);
    return Number(v);
  };
  const offset = num('offset') ?? 0;
  const length = num('length');
  return length === undefined ? { location, offset } : { location, offset, length };
}

function resolveLocation(baseDir: string, location: string, where: string, source: string): string {
  // Like onnx.load, refuse paths that leave the model's folder: a model file must not make us read /etc/passwd.
  const norm = path.normalize(location);
  if (path.isAbsolute(location) || norm === '..' || norm.startsWith('..' + path.sep)) {
    throw new InputError(`${source}: ${where} points to external data '${location}' outside the model's folder; expected a relative path such as 'model.onnx.data'`);
  }
  const file = path.join(baseDir, norm);
  // The name may stay inside while a symlink (the file, or a folder on the way) leads out: compare
  // where it really is. A missing file is left for the open to report.
  let real: string;
  try {
    real = realpathSync(file);
  } catch {
    return file;
  }
  const base = realpathSync(baseDir);
  if (real !== base && !real.startsWith(base.endsWith(path.sep) ? base : base + path.sep)) {
    throw new InputError(
      `${source}: ${where} points to external data '${location}', a link to ${real}, outside the model's folder ${base}; expected the data file itself next to the model (fix: copy the file there instead of linking it)`,
    );
  }
  // A FIFO or device would block the read or never end; only a plain file holds tensor bytes.
  if (!statSync(real).isFile())
    throw new InputError(`${source}: ${where} points to external data '${location}', which is not a regular file; expected the data file written with the model`);
  return file;
}

function loadExternalData(proto: ModelProto, baseDir: string, source: string): ExternalTensorRef[] {
  const refs: ExternalTensorRef[] = [];
  const files = new Map<string, { fd: number; size: number }>();
  try {
    for (const { tensor: t, where } of allTensors(proto)) {
      if (!isExternal(t)) continue;
      const label = `tensor '${t.name}' (${where})`;
      const ref = externalRef(t, label, source);
      const file = resolveLocation(baseDir, ref.location, label, source);
      let handle = files.get(file);
      if (!handle) {
        let fd: number;
        try {
          fd = openSync(file, 'r');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          throw new InputError(
            `${source}: ${label} keeps its data in '${ref.location}', but ${file} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}; ` +
              `expected the data file next to the model (copy it along with the .onnx file)`,
            [],
            { cause: err },
          );
        }
        handle = { fd, size: fstatSync(fd).size };
        files.set(file, handle);
      }
      const dtype = dtypeFromCode(t.dataType);
      const expected = dtype && dtype !== 'string' ? rawByteLength(dtype, elementCount(t.dims.map(Number))) : undefined;
      const length = ref.length ?? expected ?? handle.size - ref.offset;
      if (expected !== undefined && length !== expected) {
        throw new OnnxFormatError(
          `${source}: ${label} declares ${length} bytes of external data in '${ref.location}'; expected ${expected} for dims [${t.dims.join(', ')}]`,
        );
      }
      if (ref.offset + length > handle.size) {
        throw new InputError(
          `${source}: ${label} needs bytes ${ref.offset}..${ref.offset + length} of '${ref.location}', but that file has only ${handle.size} bytes; ` +
            `expected the complete data file written with the model (is it truncated, or from another export?)`,
        );
      }
      const data = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(handle.fd, data, done, length - done, ref.offset + done);
        if (n === 0) break;
        done += n;
      }
      // From here on the tensor is an ordinary in-memory tensor: writing inlines it unless asked otherwise.
      t.rawData = data;
      t.externalData = [];
      delete (t as { dataLocation?: unknown }).dataLocation;
      refs.push({ where, name: t.name, location: ref.location, offset: ref.offset, length });
    }
  } finally {
    for (const { fd } of files.values()) closeSync(fd);
  }
  return refs;
}

/** Read and decode a .onnx file, loading external data from its folder. */
export async function readModel(file: string, opts: ReadOptions = {}): Promise<OnnxModel> {
  let bytes: Uint8Array;
  try {
    bytes = await fsp.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a file' : `cannot be read (${code ?? String(err)})`;
    throw new InputError(`${file}: ${why}; expected an ONNX model file (.onnx)`, [{ where: file, message: why }], { cause: err });
  }
  return decodeModel(bytes, { source: file, baseDir: path.dirname(path.resolve(file)), loadExternalData: opts.loadExternalData ?? true });
}

// ---- encoding ----

export interface ExternalDataOptions {
  /** Data file name, relative to the model's folder. Default: `<model file name>.data`. */
  location?: string;
  /** Tensors with fewer raw bytes stay inline (default 1024, as onnx.save). */
  sizeThreshold?: number;
  /** Offsets in the data file are multiples of this (default 4096, the page size, so runtimes can mmap). */
  align?: number;
}

export interface WriteOptions {
  /** Write large tensors to a side file instead of inline. Default: everything inline. */
  externalData?: ExternalDataOptions;
}

function checkSize(bytes: number, source: string): void {
  if (bytes > PROTOBUF_LIMIT) {
    throw new UnsupportedError(`${source}: the encoded model would be ${bytes} bytes, over protobuf's 2 GiB limit; write it with { externalData: {} } to keep weights in a side file`);
  }
}

/** Encode the model as .onnx bytes. Tensors stay where they are (loaded external data is inlined). */
export function encodeModel(model: OnnxModel): Uint8Array {
  const out = toBinary(ModelProtoSchema, model.proto);
  checkSize(out.length, model.source);
  return out;
}

/** Keys of a tensor that external-data encoding changes, so they can be put back. */
const SWAPPED = ['rawData', 'externalData', 'dataLocation', 'floatData', 'int32Data', 'int64Data', 'doubleData', 'uint64Data'] as const;

/**
 * Encode with tensors of at least `sizeThreshold` bytes moved to one data file. Returns the
 * model bytes and the data file bytes; the in-memory model is left unchanged.
 */
export function encodeModelWithExternalData(
  model: OnnxModel,
  opts: ExternalDataOptions & { location: string },
): { model: Uint8Array; data: Uint8Array; tensors: ExternalTensorRef[] } {
  const threshold = opts.sizeThreshold ?? 1024;
  const align = opts.align ?? 4096;
  if (!Number.isInteger(align) || align < 1) throw new InputError(`externalData.align is ${align}; expected a positive integer such as 4096`);
  const location = opts.location;
  if (path.isAbsolute(location) || path.normalize(location).startsWith('..')) {
    throw new InputError(`externalData.location '${location}' must be a path relative to the model's folder`);
  }
  const chunks: { offset: number; bytes: Uint8Array }[] = [];
  const refs: ExternalTensorRef[] = [];
  const saved: { t: TensorProto; own: Map<string, unknown> }[] = [];
  let size = 0;
  try {
    for (const { tensor: t, where } of allTensors(model.proto)) {
      if (isExternal(t)) {
        if (t.rawData.length === 0) {
          throw new InputError(`${model.source}: tensor '${t.name}' (${where}) still refers to unloaded external data; read the model with external data loaded before re-writing it`);
        }
      }
      const dtype = dtypeFromCode(t.dataType);
      if (!dtype || dtype === 'string') continue;
      const count = elementCount(t.dims.map(Number));
      if (rawByteLength(dtype, count) < threshold) continue;
      const bytes = tensorRawBytes(t);
      const offset = Math.ceil(size / align) * align;
      chunks.push({ offset, bytes });
      size = offset + bytes.length;
      refs.push({ where, name: t.name, location, offset, length: bytes.length });
      // proto2 presence lives in own properties (defaults sit on the prototype): remember which
      // were set, so the tensor can be put back exactly as it was.
      const fields = t as unknown as Record<string, unknown>;
      const own = new Map<string, unknown>();
      for (const k of SWAPPED) if (Object.prototype.hasOwnProperty.call(fields, k)) own.set(k, fields[k]);
      saved.push({ t, own });
      for (const k of SWAPPED) delete fields[k];
      t.floatData = [];
      t.int32Data = [];
      t.int64Data = [];
      t.doubleData = [];
      t.uint64Data = [];
      t.dataLocation = TensorProto_DataLocation.EXTERNAL;
      t.externalData = [
        create(StringStringEntryProtoSchema, { key: 'location', value: location }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
        create(StringStringEntryProtoSchema, { key: 'length', value: String(bytes.length) }),
      ];
    }
    const encoded = toBinary(ModelProtoSchema, model.proto);
    checkSize(encoded.length, model.source);
    const data = new Uint8Array(size);
    for (const c of chunks) data.set(c.bytes, c.offset);
    return { model: encoded, data, tensors: refs };
  } finally {
    for (const { t, own } of saved) {
      const fields = t as unknown as Record<string, unknown>;
      for (const k of SWAPPED) delete fields[k];
      for (const [k, v] of own) fields[k] = v;
    }
  }
}

/**
 * Write the model atomically. With `externalData`, large tensors go to a side file (written
 * first, so the model never points at a missing file); without, everything is inlined.
 */
export async function writeModel(model: OnnxModel, file: string, opts: WriteOptions = {}): Promise<void> {
  if (opts.externalData) {
    const location = opts.externalData.location ?? path.basename(file) + '.data';
    const out = encodeModelWithExternalData(model, { ...opts.externalData, location });
    // No tensor reached the threshold: nothing refers to a data file, so do not write an empty one.
    if (out.tensors.length > 0) await writeFileAtomic(path.join(path.dirname(file), location), out.data);
    await writeFileAtomic(file, out.model);
    return;
  }
  const unloaded = allTensors(model.proto).find(({ tensor: t }) => isExternal(t) && t.rawData.length === 0);
  if (unloaded) {
    const sameDir = model.baseDir !== undefined && path.resolve(model.baseDir) === path.resolve(path.dirname(file));
    if (!sameDir) {
      throw new InputError(
        `${model.source}: tensor '${unloaded.tensor.name}' refers to external data that was not loaded, so writing the model to ${file} would leave it pointing at a missing file; ` +
          `read the model with external data loaded, or write it next to the original`,
      );
    }
  }
  await writeFileAtomic(file, encodeModel(model));
}
