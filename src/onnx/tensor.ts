// TensorProto ⇄ typed arrays. ONNX stores elements either in raw_data (fixed-width
// little-endian, sub-byte types packed low bits first) or in a typed repeated field whose choice
// depends on the element type (float16 bits ride in int32_data, uint32 in uint64_data, …). Both
// are read here so that models from any writer decode; we always write raw_data, which is what
// onnx.numpy_helper and torch.onnx.export write too.
import { create, isFieldSet } from '@bufbuild/protobuf';
import { InputError, OnnxFormatError, UnsupportedError } from '../util/errors.js';
import { TensorProtoSchema, TensorProto_DataLocation, type TensorProto } from './gen/onnx_pb.js';
import {
  DTYPES,
  dtypeBits,
  requireDType,
  rawByteLength,
  type DTypeArrayMap,
  type DTypeName,
  type TensorArray,
} from './dtype.js';

/** A decoded tensor; `dtype` narrows `data`. */
export type TensorValue = {
  [D in DTypeName]: { name: string; dtype: D; dims: number[]; data: DTypeArrayMap[D] };
}[DTypeName];

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const utf8Decoder = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

function label(t: TensorProto): string {
  return t.name ? `tensor '${t.name}'` : 'unnamed tensor';
}

/** dims as numbers (ONNX stores int64; a dimension past 2^53 would not fit in memory anyway). */
export function tensorDims(t: TensorProto): number[] {
  return t.dims.map((d) => {
    const n = Number(d);
    if (n < 0) throw new OnnxFormatError(`${label(t)}: dimension ${d} is negative; expected sizes >= 0`);
    return n;
  });
}

export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** The element type of a tensor, or an UnsupportedError for UNDEFINED / unknown numbers. */
export function tensorDType(t: TensorProto): DTypeName {
  return requireDType(t.dataType, label(t));
}

/** Whether the tensor's bytes live in a file next to the model rather than in the message. */
export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === TensorProto_DataLocation.EXTERNAL;
}

function externalNotLoaded(t: TensorProto): InputError {
  const loc = t.externalData.find((e) => e.key === 'location')?.value ?? '(no location)';
  return new InputError(
    `${label(t)}: its data is stored in the external file '${loc}' and was not loaded; ` +
      `read the model with readModel(file) or decodeModel(bytes, { baseDir }) so external data is loaded`,
  );
}

function hasRaw(t: TensorProto): boolean {
  return t.rawData.length > 0 || isFieldSet(t, TensorProtoSchema.field.rawData);
}

/** Copy bytes into a fresh, aligned buffer, swapping to host order when the host is big-endian. */
function alignedCopy(bytes: Uint8Array, width: number): ArrayBuffer {
  // new Uint8Array(x) copies; Buffer#slice would not (it returns a view into the whole file).
  const copy = new Uint8Array(bytes);
  if (!LITTLE_ENDIAN && width > 1) swapInPlace(copy, width);
  return copy.buffer;
}

function swapInPlace(bytes: Uint8Array, width: number): void {
  for (let i = 0; i + width <= bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const x = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = x;
    }
  }
}

/** Unpack `count` elements of `bits` (4 or 2) from packed bytes, low bits first; sign-extend when `signed`. */
function unpackSubByte(bytes: ArrayLike<number>, count: number, bits: number, signed: boolean): Uint8Array | Int8Array {
  const out = signed ? new Int8Array(count) : new Uint8Array(count);
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const signBit = 1 << (bits - 1);
  for (let i = 0; i < count; i++) {
    const byte = bytes[Math.floor(i / perByte)]! & 0xff;
    let v = (byte >> ((i % perByte) * bits)) & mask;
    if (signed && v & signBit) v -= 1 << bits;
    out[i] = v;
  }
  return out;
}

function packSubByte(values: ArrayLike<number>, bits: number): Uint8Array {
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(Math.ceil(values.length / perByte));
  for (let i = 0; i < values.length; i++) {
    out[Math.floor(i / perByte)]! |= (values[i]! & mask) << ((i % perByte) * bits);
  }
  return out;
}

function bad(t: TensorProto, dtype: DTypeName, what: string): OnnxFormatError {
  return new OnnxFormatError(`${label(t)} (${dtype}, dims [${t.dims.join(', ')}]): ${what}`);
}

function fromRaw(t: TensorProto, dtype: DTypeName, n: number): TensorArray {
  const raw = t.rawData;
  if (dtype === 'string') throw bad(t, dtype, 'string tensors must use string_data, but raw_data is set');
  const bits = dtypeBits(dtype);
  const want = rawByteLength(dtype, n);
  if (raw.length !== want) {
    throw bad(t, dtype, `raw_data has ${raw.length} bytes; expected ${want} (${n} elements × ${bits} bits)`);
  }
  switch (dtype) {
    case 'float32':
    case 'complex64':
      return new Float32Array(alignedCopy(raw, 4));
    case 'float64':
    case 'complex128':
      return new Float64Array(alignedCopy(raw, 8));
    case 'float16':
    case 'bfloat16':
    case 'uint16':
      return new Uint16Array(alignedCopy(raw, 2));
    case 'int16':
      return new Int16Array(alignedCopy(raw, 2));
    case 'int32':
      return new Int32Array(alignedCopy(raw, 4));
    case 'uint32':
      return new Uint32Array(alignedCopy(raw, 4));
    case 'int64':
      return new BigInt64Array(alignedCopy(raw, 8));
    case 'uint64':
      return new BigUint64Array(alignedCopy(raw, 8));
    case 'int8':
      return new Int8Array(alignedCopy(raw, 1));
    case 'uint8':
    case 'bool':
    case 'float8e4m3fn':
    case 'float8e4m3fnuz':
    case 'float8e5m2':
    case 'float8e5m2fnuz':
    case 'float8e8m0':
      return new Uint8Array(alignedCopy(raw, 1));
    case 'uint4':
    case 'float4e2m1':
      return unpackSubByte(raw, n, 4, false);
    case 'int4':
      return unpackSubByte(raw, n, 4, true);
    case 'uint2':
      return unpackSubByte(raw, n, 2, false);
    case 'int2':
      return unpackSubByte(raw, n, 2, true);
  }
}

function checkCount(t: TensorProto, dtype: DTypeName, field: string, got: number, want: number): void {
  if (got !== want) throw bad(t, dtype, `${field} has ${got} entries; expected ${want}`);
}

/** Which typed field the specification assigns to each element type. */
function typedField(dtype: DTypeName): 'float_data' | 'double_data' | 'int32_data' | 'int64_data' | 'uint64_data' | 'string_data' {
  switch (dtype) {
    case 'float32':
    case 'complex64':
      return 'float_data';
    case 'float64':
    case 'complex128':
      return 'double_data';
    case 'int64':
      return 'int64_data';
    case 'uint32':
    case 'uint64':
      return 'uint64_data';
    case 'string':
      return 'string_data';
    default:
      return 'int32_data';
  }
}

function typedLength(t: TensorProto): number {
  return t.floatData.length + t.doubleData.length + t.int32Data.length + t.int64Data.length + t.uint64Data.length + t.stringData.length;
}

function fromTyped(t: TensorProto, dtype: DTypeName, n: number): TensorArray {
  const field = typedField(dtype);
  const present = typedLength(t);
  const own =
    field === 'float_data'
      ? t.floatData.length
      : field === 'double_data'
        ? t.doubleData.length
        : field === 'int32_data'
          ? t.int32Data.length
          : field === 'int64_data'
            ? t.int64Data.length
            : field === 'uint64_data'
              ? t.uint64Data.length
              : t.stringData.length;
  if (present > own) {
    throw bad(t, dtype, `data is in a typed field that does not belong to this type; the specification puts ${dtype} in ${field}`);
  }
  switch (dtype) {
    case 'float32':
      checkCount(t, dtype, field, t.floatData.length, n);
      return Float32Array.from(t.floatData);
    case 'complex64':
      checkCount(t, dtype, field, t.floatData.length, 2 * n);
      return Float32Array.from(t.floatData);
    case 'float64':
      checkCount(t, dtype, field, t.doubleData.length, n);
      return Float64Array.from(t.doubleData);
    case 'complex128':
      checkCount(t, dtype, field, t.doubleData.length, 2 * n);
      return Float64Array.from(t.doubleData);
    case 'int64':
      checkCount(t, dtype, field, t.int64Data.length, n);
      return BigInt64Array.from(t.int64Data);
    case 'uint64':
      checkCount(t, dtype, field, t.uint64Data.length, n);
      return BigUint64Array.from(t.uint64Data);
    case 'uint32':
      checkCount(t, dtype, field, t.uint64Data.length, n);
      return Uint32Array.from(t.uint64Data, (v) => Number(BigInt.asUintN(32, v)));
    case 'string':
      checkCount(t, dtype, field, t.stringData.length, n);
      return t.stringData.map((b) => utf8Decoder.decode(b));
    case 'int32':
      checkCount(t, dtype, field, t.int32Data.length, n);
      return Int32Array.from(t.int32Data);
    case 'int16':
      checkCount(t, dtype, field, t.int32Data.length, n);
      return Int16Array.from(t.int32Data);
    case 'int8':
      checkCount(t, dtype, field, t.int32Data.length, n);
      return Int8Array.from(t.int32Data);
    case 'uint16':
    case 'float16':
    case 'bfloat16':
      // Half-precision values are stored as their 16 bit patterns, one per int32.
      checkCount(t, dtype, field, t.int32Data.length, n);
      return Uint16Array.from(t.int32Data);
    case 'bool':
      checkCount(t, dtype, field, t.int32Data.length, n);
      return Uint8Array.from(t.int32Data, (v) => (v !== 0 ? 1 : 0));
    case 'uint8':
    case 'float8e4m3fn':
    case 'float8e4m3fnuz':
    case 'float8e5m2':
    case 'float8e5m2fnuz':
    case 'float8e8m0':
      checkCount(t, dtype, field, t.int32Data.length, n);
      return Uint8Array.from(t.int32Data);
    case 'uint4':
    case 'int4':
    case 'float4e2m1':
    case 'uint2':
    case 'int2': {
      // Sub-byte types: each int32 holds one packed byte (two 4-bit or four 2-bit elements).
      const bits = dtypeBits(dtype);
      checkCount(t, dtype, field, t.int32Data.length, rawByteLength(dtype, n));
      return unpackSubByte(t.int32Data, n, bits, dtype === 'int4' || dtype === 'int2');
    }
  }
}

/**
 * The elements of a tensor as the typed array for its dtype (a copy; changing it does not change
 * the tensor). With `expect`, also checks the dtype and narrows the return type.
 */
export function tensorToArray(t: TensorProto): TensorArray;
export function tensorToArray<D extends DTypeName>(t: TensorProto, expect: D): DTypeArrayMap[D];
export function tensorToArray(t: TensorProto, expect?: DTypeName): TensorArray {
  const dtype = tensorDType(t);
  if (expect !== undefined && expect !== dtype) {
    throw new UnsupportedError(`${label(t)}: is ${dtype}; expected ${expect}`);
  }
  if (isFieldSet(t, TensorProtoSchema.field.segment)) {
    throw new UnsupportedError(`${label(t)}: is one segment of a split tensor; segmented tensors are not supported`);
  }
  if (isExternal(t) && !hasRaw(t)) throw externalNotLoaded(t);
  const n = elementCount(tensorDims(t));
  if (hasRaw(t)) return fromRaw(t, dtype, n);
  if (typedLength(t) === 0 && n > 0) throw bad(t, dtype, `holds no data (raw_data and the typed fields are empty)`);
  return fromTyped(t, dtype, n);
}

/** name, dtype, dims and data in one object; `dtype` narrows `data`. */
export function decodeTensor(t: TensorProto): TensorValue {
  return { name: t.name, dtype: tensorDType(t), dims: tensorDims(t), data: tensorToArray(t) } as TensorValue;
}

/** The tensor's elements as raw_data bytes (little-endian, sub-byte types packed), whichever field holds them. */
export function tensorRawBytes(t: TensorProto): Uint8Array {
  if (hasRaw(t)) return t.rawData;
  const dtype = tensorDType(t);
  if (dtype === 'string') throw new UnsupportedError(`${label(t)}: string tensors have no raw_data form`);
  return arrayToRaw(dtype, tensorToArray(t));
}

function arrayToRaw(dtype: DTypeName, data: TensorArray): Uint8Array {
  const bits = dtypeBits(dtype);
  if (bits < 8) return packSubByte(data as Uint8Array | Int8Array, bits);
  const view = data as Exclude<TensorArray, string[]>;
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  if (!LITTLE_ENDIAN) swapInPlace(bytes, view.BYTES_PER_ELEMENT);
  return bytes;
}

const ARRAY_CTOR: { readonly [D in Exclude<DTypeName, 'string'>]: abstract new (...args: never[]) => DTypeArrayMap[D] } = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int64: BigInt64Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
  complex64: Float32Array,
  complex128: Float64Array,
  float8e4m3fn: Uint8Array,
  float8e4m3fnuz: Uint8Array,
  float8e5m2: Uint8Array,
  float8e5m2fnuz: Uint8Array,
  float8e8m0: Uint8Array,
  uint4: Uint8Array,
  int4: Int8Array,
  float4e2m1: Uint8Array,
  uint2: Uint8Array,
  int2: Int8Array,
};

/**
 * Build a TensorProto holding `data` in raw_data (string tensors: string_data, the only form the
 * specification allows for them). `data` is the same array type tensorToArray returns.
 */
export function arrayToTensor<D extends DTypeName>(name: string, dims: readonly number[], dtype: D, data: DTypeArrayMap[D]): TensorProto {
  const where = `arrayToTensor('${name}')`;
  if (!Object.prototype.hasOwnProperty.call(DTYPES, dtype)) {
    throw new InputError(`${where}: unknown dtype ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPES).join(', ')}`);
  }
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new InputError(`${where}: dims [${dims.join(', ')}] must be integers >= 0`);
  }
  const n = elementCount(dims);
  const perElement = dtype === 'complex64' || dtype === 'complex128' ? 2 : 1;
  if (data.length !== n * perElement) {
    throw new InputError(
      `${where}: dims [${dims.join(', ')}] need ${n * perElement} ${dtype} values${perElement === 2 ? ' (re, im pairs)' : ''}, got ${data.length}`,
    );
  }
  if (dtype !== 'string') {
    const ctor = ARRAY_CTOR[dtype as Exclude<DTypeName, 'string'>];
    if (!(data instanceof ctor)) {
      throw new InputError(`${where}: ${dtype} data must be a ${ctor.name}, got ${(data as object).constructor?.name ?? typeof data}`);
    }
  }
  const base = { name, dims: dims.map((d) => BigInt(d)), dataType: DTYPES[dtype].code };
  if (dtype === 'string') {
    return create(TensorProtoSchema, { ...base, stringData: (data as string[]).map((s) => utf8Encoder.encode(s)) });
  }
  return create(TensorProtoSchema, { ...base, rawData: arrayToRaw(dtype, data) });
}

// ---- conversions for types JS has no number type for ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function float16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Round a number to the nearest float16 (ties to even) and return its bits. */
export function numberToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

export function float16ToFloat32(bits: Uint16Array): Float32Array {
  return Float32Array.from(bits, float16BitsToNumber);
}

export function float32ToFloat16(values: ArrayLike<number>): Uint16Array {
  return Uint16Array.from({ length: values.length }, (_, i) => numberToFloat16Bits(values[i]!));
}

export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) words[i] = bits[i]! << 16;
  return out;
}

/** Round to the nearest bfloat16 (ties to even); NaN stays NaN. */
export function float32ToBfloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    const x = u32[0]!;
    if (Number.isNaN(values[i]!)) out[i] = (x >>> 16) | 0x40;
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

export type Float8DType = 'float8e4m3fn' | 'float8e4m3fnuz' | 'float8e5m2' | 'float8e5m2fnuz' | 'float8e8m0' | 'float4e2m1';

/** Decode one 8-bit (or 4-bit) float code per the ONNX definitions of each format. */
export function float8CodeToNumber(code: number, dtype: Float8DType): number {
  switch (dtype) {
    case 'float8e8m0':
      // Exponent only: a power of two scale; 0xFF is NaN.
      return code === 0xff ? NaN : 2 ** (code - 127);
    case 'float8e4m3fn':
      if ((code & 0x7f) === 0x7f) return NaN;
      return minifloat(code, 4, 3, 7);
    case 'float8e4m3fnuz':
      if (code === 0x80) return NaN;
      return minifloat(code, 4, 3, 8);
    case 'float8e5m2':
      if ((code & 0x7c) === 0x7c) return code & 0x03 ? NaN : code & 0x80 ? -Infinity : Infinity;
      return minifloat(code, 5, 2, 15);
    case 'float8e5m2fnuz':
      if (code === 0x80) return NaN;
      return minifloat(code, 5, 2, 16);
    case 'float4e2m1':
      return minifloat(code & 0x0f, 2, 1, 1);
  }
}

function minifloat(code: number, expBits: number, mantBits: number, bias: number): number {
  const sign = (code >> (expBits + mantBits)) & 1 ? -1 : 1;
  const exp = (code >> mantBits) & ((1 << expBits) - 1);
  const mant = code & ((1 << mantBits) - 1);
  if (exp === 0) return sign * mant * 2 ** (1 - bias - mantBits);
  return sign * (1 + mant / (1 << mantBits)) * 2 ** (exp - bias);
}

export function float8ToFloat32(codes: Uint8Array, dtype: Float8DType): Float32Array {
  return Float32Array.from(codes, (c) => float8CodeToNumber(c, dtype));
}

/**
 * Any numeric tensor as float32 (float16/bfloat16/float8 converted, integers and bools cast,
 * int64 through Number). Complex and string tensors are refused.
 */
export function toFloat32(value: TensorValue): Float32Array {
  switch (value.dtype) {
    case 'float32':
      return value.data;
    case 'float16':
      return float16ToFloat32(value.data);
    case 'bfloat16':
      return bfloat16ToFloat32(value.data);
    case 'float8e4m3fn':
    case 'float8e4m3fnuz':
    case 'float8e5m2':
    case 'float8e5m2fnuz':
    case 'float8e8m0':
    case 'float4e2m1':
      return float8ToFloat32(value.data, value.dtype);
    case 'int64':
    case 'uint64':
      return Float32Array.from(value.data as ArrayLike<bigint> & Iterable<bigint>, (v) => Number(v));
    case 'string':
    case 'complex64':
    case 'complex128':
      throw new UnsupportedError(`tensor '${value.name}': ${value.dtype} has no float32 form`);
    default:
      return Float32Array.from(value.data);
  }
}
