// ONNX element types: names, sizes and the JS array each one decodes to. Every TensorProto
// DataType up to IR 13 is here (FLOAT8 variants, 4- and 2-bit integers, FLOAT4E2M1, FLOAT8E8M0),
// so that a quantised model never fails on "unknown data type 17". Types JS has no number type
// for keep their raw bits (float16 → Uint16Array) and get conversion helpers in tensor.ts.
import { UnsupportedError } from '../util/errors.js';

/**
 * TensorProto.DataType codes, as the ONNX IR specification numbers them (the same values as the
 * generated TensorProto_DataType; a test checks they agree). Defined here rather than imported
 * from the generated codec so that the device path, which needs only these numbers, does not load
 * the protobuf runtime.
 */
export enum DataType {
  UNDEFINED = 0,
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  UINT16 = 4,
  INT16 = 5,
  INT32 = 6,
  INT64 = 7,
  STRING = 8,
  BOOL = 9,
  FLOAT16 = 10,
  DOUBLE = 11,
  UINT32 = 12,
  UINT64 = 13,
  COMPLEX64 = 14,
  COMPLEX128 = 15,
  BFLOAT16 = 16,
  FLOAT8E4M3FN = 17,
  FLOAT8E4M3FNUZ = 18,
  FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20,
  UINT4 = 21,
  INT4 = 22,
  FLOAT4E2M1 = 23,
  FLOAT8E8M0 = 24,
  UINT2 = 25,
  INT2 = 26,
}

/** The array `tensorToArray` returns for each element type. */
export interface DTypeArrayMap {
  float32: Float32Array;
  float64: Float64Array;
  /** Raw IEEE half bits; `float16ToFloat32` converts. */
  float16: Uint16Array;
  /** Raw bfloat16 bits (the top half of a float32); `bfloat16ToFloat32` converts. */
  bfloat16: Uint16Array;
  int8: Int8Array;
  uint8: Uint8Array;
  int16: Int16Array;
  uint16: Uint16Array;
  int32: Int32Array;
  uint32: Uint32Array;
  int64: BigInt64Array;
  uint64: BigUint64Array;
  /** One byte per element, 0 or 1. */
  bool: Uint8Array;
  /** UTF-8 decoded. */
  string: string[];
  /** Interleaved (re, im) pairs: length is twice the element count. */
  complex64: Float32Array;
  complex128: Float64Array;
  /** Raw 8-bit codes, one per element; `float8ToFloat32` converts. */
  float8e4m3fn: Uint8Array;
  float8e4m3fnuz: Uint8Array;
  float8e5m2: Uint8Array;
  float8e5m2fnuz: Uint8Array;
  float8e8m0: Uint8Array;
  /** Unpacked: one element per array slot (the file packs two or four per byte). */
  uint4: Uint8Array;
  int4: Int8Array;
  /** Raw 4-bit codes, one per slot. */
  float4e2m1: Uint8Array;
  uint2: Uint8Array;
  int2: Int8Array;
}

export type DTypeName = keyof DTypeArrayMap;
export type TensorArray = DTypeArrayMap[DTypeName];

interface DTypeInfo {
  code: DataType;
  /** Bits per element in raw_data (complex: both halves). 0 for string. */
  bits: number;
  /** The name ONNX documentation uses, for messages. */
  onnx: string;
}

export const DTYPES: { readonly [D in DTypeName]: DTypeInfo } = {
  float32: { code: DataType.FLOAT, bits: 32, onnx: 'FLOAT' },
  uint8: { code: DataType.UINT8, bits: 8, onnx: 'UINT8' },
  int8: { code: DataType.INT8, bits: 8, onnx: 'INT8' },
  uint16: { code: DataType.UINT16, bits: 16, onnx: 'UINT16' },
  int16: { code: DataType.INT16, bits: 16, onnx: 'INT16' },
  int32: { code: DataType.INT32, bits: 32, onnx: 'INT32' },
  int64: { code: DataType.INT64, bits: 64, onnx: 'INT64' },
  string: { code: DataType.STRING, bits: 0, onnx: 'STRING' },
  bool: { code: DataType.BOOL, bits: 8, onnx: 'BOOL' },
  float16: { code: DataType.FLOAT16, bits: 16, onnx: 'FLOAT16' },
  float64: { code: DataType.DOUBLE, bits: 64, onnx: 'DOUBLE' },
  uint32: { code: DataType.UINT32, bits: 32, onnx: 'UINT32' },
  uint64: { code: DataType.UINT64, bits: 64, onnx: 'UINT64' },
  complex64: { code: DataType.COMPLEX64, bits: 64, onnx: 'COMPLEX64' },
  complex128: { code: DataType.COMPLEX128, bits: 128, onnx: 'COMPLEX128' },
  bfloat16: { code: DataType.BFLOAT16, bits: 16, onnx: 'BFLOAT16' },
  float8e4m3fn: { code: DataType.FLOAT8E4M3FN, bits: 8, onnx: 'FLOAT8E4M3FN' },
  float8e4m3fnuz: { code: DataType.FLOAT8E4M3FNUZ, bits: 8, onnx: 'FLOAT8E4M3FNUZ' },
  float8e5m2: { code: DataType.FLOAT8E5M2, bits: 8, onnx: 'FLOAT8E5M2' },
  float8e5m2fnuz: { code: DataType.FLOAT8E5M2FNUZ, bits: 8, onnx: 'FLOAT8E5M2FNUZ' },
  uint4: { code: DataType.UINT4, bits: 4, onnx: 'UINT4' },
  int4: { code: DataType.INT4, bits: 4, onnx: 'INT4' },
  float4e2m1: { code: DataType.FLOAT4E2M1, bits: 4, onnx: 'FLOAT4E2M1' },
  float8e8m0: { code: DataType.FLOAT8E8M0, bits: 8, onnx: 'FLOAT8E8M0' },
  uint2: { code: DataType.UINT2, bits: 2, onnx: 'UINT2' },
  int2: { code: DataType.INT2, bits: 2, onnx: 'INT2' },
};

const BY_CODE = new Map<number, DTypeName>(Object.entries(DTYPES).map(([name, info]) => [info.code, name as DTypeName]));

/** Every element type this module knows, in DataType number order. */
export const DTYPE_NAMES: readonly DTypeName[] = [...BY_CODE.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => n);

export function isDTypeName(s: string): s is DTypeName {
  return Object.prototype.hasOwnProperty.call(DTYPES, s);
}

/** DataType number → name; undefined for UNDEFINED (0) and numbers newer than this module. */
export function dtypeFromCode(code: number): DTypeName | undefined {
  return BY_CODE.get(code);
}

/** Like dtypeFromCode, but throws an UnsupportedError naming the tensor for unknown numbers. */
export function requireDType(code: number, what: string): DTypeName {
  const name = BY_CODE.get(code);
  if (name === undefined) {
    throw new UnsupportedError(
      `${what}: data_type ${code} is ${code === 0 ? 'UNDEFINED' : 'not a known ONNX TensorProto.DataType'}; ` +
        `expected one of ${DTYPE_NAMES.map((n) => `${DTYPES[n].code} (${n})`).join(', ')}`,
    );
  }
  return name;
}

export function dtypeCode(name: DTypeName): DataType {
  return DTYPES[name].code;
}

/** Bits per element in raw_data (0 for string). */
export function dtypeBits(name: DTypeName): number {
  return DTYPES[name].bits;
}

/** Bytes that `count` elements take in raw_data (sub-byte types packed, rounded up). */
export function rawByteLength(name: DTypeName, count: number): number {
  return Math.ceil((count * DTYPES[name].bits) / 8);
}

/** The ONNX spelling for messages: `float32 (FLOAT)`. */
export function describeDType(code: number): string {
  const name = BY_CODE.get(code);
  return name === undefined ? `data_type ${code}` : `${name} (${DTYPES[name].onnx})`;
}

export const FLOAT_DTYPES: ReadonlySet<DTypeName> = new Set<DTypeName>([
  'float32',
  'float64',
  'float16',
  'bfloat16',
  'float8e4m3fn',
  'float8e4m3fnuz',
  'float8e5m2',
  'float8e5m2fnuz',
  'float8e8m0',
  'float4e2m1',
]);
