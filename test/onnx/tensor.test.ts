// Tensor decoding for every element type, from raw_data (bytes built here by hand with explicit
// little-endian writes) and from the typed field the specification assigns to each type; and
// arrayToTensor writing exactly those raw bytes back.
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { InputError, OnnxFormatError, UnsupportedError } from '../../src/util/errors.js';
import { TensorProtoSchema } from '../../src/onnx/gen/onnx_pb.js';
import {
  DTYPE_NAMES,
  arrayToTensor,
  bfloat16ToFloat32,
  decodeTensor,
  dtypeCode,
  float16BitsToNumber,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  float8ToFloat32,
  numberToFloat16Bits,
  tensorToArray,
  toFloat32,
  type DTypeArrayMap,
  type DTypeName,
} from '../../src/onnx/index.js';

type Kind = 'f32' | 'f64' | 'i8' | 'u8' | 'i16' | 'u16' | 'i32' | 'u32' | 'i64' | 'u64';

/** Little-endian bytes written one value at a time with DataView, independent of the code under test. */
function le(kind: Kind, values: readonly (number | bigint)[]): Uint8Array {
  const width = { f32: 4, f64: 8, i8: 1, u8: 1, i16: 2, u16: 2, i32: 4, u32: 4, i64: 8, u64: 8 }[kind];
  const dv = new DataView(new ArrayBuffer(width * values.length));
  values.forEach((v, i) => {
    const o = i * width;
    if (kind === 'f32') dv.setFloat32(o, v as number, true);
    else if (kind === 'f64') dv.setFloat64(o, v as number, true);
    else if (kind === 'i8') dv.setInt8(o, v as number);
    else if (kind === 'u8') dv.setUint8(o, v as number);
    else if (kind === 'i16') dv.setInt16(o, v as number, true);
    else if (kind === 'u16') dv.setUint16(o, v as number, true);
    else if (kind === 'i32') dv.setInt32(o, v as number, true);
    else if (kind === 'u32') dv.setUint32(o, v as number, true);
    else if (kind === 'i64') dv.setBigInt64(o, v as bigint, true);
    else dv.setBigUint64(o, v as bigint, true);
  });
  return new Uint8Array(dv.buffer);
}

type Typed = Pick<MessageInitShape<typeof TensorProtoSchema>, 'floatData' | 'doubleData' | 'int32Data' | 'int64Data' | 'uint64Data' | 'stringData'>;

interface Case<D extends DTypeName = DTypeName> {
  dtype: D;
  dims: number[];
  expected: DTypeArrayMap[D];
  raw?: Uint8Array;
  typed: Typed;
}

const c = <D extends DTypeName>(x: Case<D>): Case => x as unknown as Case;

const CASES: Case[] = [
  c({ dtype: 'float32', dims: [2, 2], expected: Float32Array.of(1.5, -2, 0, 3.25), raw: le('f32', [1.5, -2, 0, 3.25]), typed: { floatData: [1.5, -2, 0, 3.25] } }),
  c({ dtype: 'float64', dims: [3], expected: Float64Array.of(Math.PI, -1e300, 0.1), raw: le('f64', [Math.PI, -1e300, 0.1]), typed: { doubleData: [Math.PI, -1e300, 0.1] } }),
  c({ dtype: 'float16', dims: [4], expected: Uint16Array.of(0x3c00, 0xc000, 0x7bff, 0x0001), raw: le('u16', [0x3c00, 0xc000, 0x7bff, 0x0001]), typed: { int32Data: [0x3c00, 0xc000, 0x7bff, 0x0001] } }),
  c({ dtype: 'bfloat16', dims: [3], expected: Uint16Array.of(0x3f80, 0xc040, 0x7f80), raw: le('u16', [0x3f80, 0xc040, 0x7f80]), typed: { int32Data: [0x3f80, 0xc040, 0x7f80] } }),
  c({ dtype: 'int8', dims: [4], expected: Int8Array.of(-128, -1, 0, 127), raw: le('i8', [-128, -1, 0, 127]), typed: { int32Data: [-128, -1, 0, 127] } }),
  c({ dtype: 'uint8', dims: [3], expected: Uint8Array.of(0, 1, 255), raw: le('u8', [0, 1, 255]), typed: { int32Data: [0, 1, 255] } }),
  c({ dtype: 'int16', dims: [3], expected: Int16Array.of(-32768, -2, 32767), raw: le('i16', [-32768, -2, 32767]), typed: { int32Data: [-32768, -2, 32767] } }),
  c({ dtype: 'uint16', dims: [3], expected: Uint16Array.of(0, 65535, 1234), raw: le('u16', [0, 65535, 1234]), typed: { int32Data: [0, 65535, 1234] } }),
  c({ dtype: 'int32', dims: [3], expected: Int32Array.of(-2147483648, 2147483647, -5), raw: le('i32', [-2147483648, 2147483647, -5]), typed: { int32Data: [-2147483648, 2147483647, -5] } }),
  c({ dtype: 'uint32', dims: [3], expected: Uint32Array.of(0, 4294967295, 7), raw: le('u32', [0, 4294967295, 7]), typed: { uint64Data: [0n, 4294967295n, 7n] } }),
  c({
    dtype: 'int64',
    dims: [3],
    expected: BigInt64Array.of(-9223372036854775808n, 9007199254740993n, -1n),
    raw: le('i64', [-9223372036854775808n, 9007199254740993n, -1n]),
    typed: { int64Data: [-9223372036854775808n, 9007199254740993n, -1n] },
  }),
  c({ dtype: 'uint64', dims: [3], expected: BigUint64Array.of(18446744073709551615n, 0n, 1n), raw: le('u64', [18446744073709551615n, 0n, 1n]), typed: { uint64Data: [18446744073709551615n, 0n, 1n] } }),
  c({ dtype: 'bool', dims: [3], expected: Uint8Array.of(1, 0, 1), raw: Uint8Array.of(1, 0, 1), typed: { int32Data: [1, 0, 1] } }),
  c({ dtype: 'string', dims: [3], expected: ['héllo', '', 'x'], typed: { stringData: ['héllo', '', 'x'].map((s) => new TextEncoder().encode(s)) } }),
  c({ dtype: 'complex64', dims: [2], expected: Float32Array.of(1, 2, 3, -4), raw: le('f32', [1, 2, 3, -4]), typed: { floatData: [1, 2, 3, -4] } }),
  c({ dtype: 'complex128', dims: [1], expected: Float64Array.of(0.5, -0.25), raw: le('f64', [0.5, -0.25]), typed: { doubleData: [0.5, -0.25] } }),
  c({ dtype: 'float8e4m3fn', dims: [5], expected: Uint8Array.of(0x00, 0x38, 0x7e, 0x7f, 0xb8), raw: Uint8Array.of(0x00, 0x38, 0x7e, 0x7f, 0xb8), typed: { int32Data: [0x00, 0x38, 0x7e, 0x7f, 0xb8] } }),
  c({ dtype: 'float8e4m3fnuz', dims: [2], expected: Uint8Array.of(0x40, 0x80), raw: Uint8Array.of(0x40, 0x80), typed: { int32Data: [0x40, 0x80] } }),
  c({ dtype: 'float8e5m2', dims: [4], expected: Uint8Array.of(0x3c, 0x7c, 0xfc, 0x7d), raw: Uint8Array.of(0x3c, 0x7c, 0xfc, 0x7d), typed: { int32Data: [0x3c, 0x7c, 0xfc, 0x7d] } }),
  c({ dtype: 'float8e5m2fnuz', dims: [2], expected: Uint8Array.of(0x40, 0x80), raw: Uint8Array.of(0x40, 0x80), typed: { int32Data: [0x40, 0x80] } }),
  c({ dtype: 'float8e8m0', dims: [4], expected: Uint8Array.of(127, 128, 0xff, 0), raw: Uint8Array.of(127, 128, 0xff, 0), typed: { int32Data: [127, 128, 0xff, 0] } }),
  // Sub-byte types: an odd count leaves the high nibble of the last byte zero.
  c({ dtype: 'uint4', dims: [5], expected: Uint8Array.of(1, 15, 0, 7, 9), raw: Uint8Array.of(0xf1, 0x70, 0x09), typed: { int32Data: [0xf1, 0x70, 0x09] } }),
  c({ dtype: 'int4', dims: [5], expected: Int8Array.of(-8, 7, -1, 0, 3), raw: Uint8Array.of(0x78, 0x0f, 0x03), typed: { int32Data: [0x78, 0x0f, 0x03] } }),
  c({ dtype: 'float4e2m1', dims: [3], expected: Uint8Array.of(0x1, 0x7, 0x9), raw: Uint8Array.of(0x71, 0x09), typed: { int32Data: [0x71, 0x09] } }),
  c({ dtype: 'uint2', dims: [5], expected: Uint8Array.of(0, 1, 2, 3, 3), raw: Uint8Array.of(0xe4, 0x03), typed: { int32Data: [0xe4, 0x03] } }),
  c({ dtype: 'int2', dims: [5], expected: Int8Array.of(-2, -1, 0, 1, -2), raw: Uint8Array.of(0x4e, 0x02), typed: { int32Data: [0x4e, 0x02] } }),
];

function tensor(dtype: DTypeName, dims: number[], fields: MessageInitShape<typeof TensorProtoSchema>) {
  return create(TensorProtoSchema, { name: `t_${dtype}`, dataType: dtypeCode(dtype), dims: dims.map(BigInt), ...fields });
}

describe('tensorToArray', () => {
  it('has a case for every known data type', () => {
    expect(CASES.map((x) => x.dtype).sort()).toEqual([...DTYPE_NAMES].sort());
  });

  describe.each(CASES.map((x) => [x.dtype, x] as const))('%s', (dtype, x) => {
    if (x.raw) {
      it('decodes raw_data', () => {
        const got = tensorToArray(tensor(dtype, x.dims, { rawData: x.raw }));
        expect(got).toEqual(x.expected);
        expect(got.constructor).toBe(x.expected.constructor);
      });
    }
    it('decodes the typed field', () => {
      const got = tensorToArray(tensor(dtype, x.dims, x.typed));
      expect(got).toEqual(x.expected);
      expect(got.constructor).toBe(x.expected.constructor);
    });
    it('arrayToTensor writes the same raw bytes (string: string_data) and reads back', () => {
      const t = arrayToTensor(`w_${dtype}`, x.dims, dtype, x.expected as never);
      expect(t.dataType).toBe(dtypeCode(dtype));
      expect(t.dims).toEqual(x.dims.map(BigInt));
      if (x.raw) expect(t.rawData).toEqual(x.raw);
      else expect(t.stringData).toEqual(x.typed.stringData);
      expect(tensorToArray(t, dtype)).toEqual(x.expected);
    });
  });

  it('narrows types: decodeTensor by dtype, tensorToArray by the expected dtype', () => {
    const t = arrayToTensor('x', [2], 'int64', BigInt64Array.of(3n, -4n));
    const a: BigInt64Array = tensorToArray(t, 'int64');
    expect([...a]).toEqual([3n, -4n]);
    const v = decodeTensor(t);
    if (v.dtype !== 'int64') throw new Error('expected int64');
    const data: BigInt64Array = v.data;
    expect(v.dims).toEqual([2]);
    expect(data[1]).toBe(-4n);
  });

  it('handles scalars and empty tensors', () => {
    expect(tensorToArray(tensor('float32', [], { rawData: le('f32', [7]) }))).toEqual(Float32Array.of(7));
    expect(tensorToArray(tensor('float32', [0, 3], {}))).toEqual(new Float32Array(0));
  });

  it('gives an OnnxFormatError naming the tensor for inconsistent data', () => {
    expect(() => tensorToArray(tensor('float32', [2], { rawData: new Uint8Array(6) }))).toThrow(
      /tensor 't_float32' \(float32, dims \[2\]\): raw_data has 6 bytes; expected 8/,
    );
    expect(() => tensorToArray(tensor('float32', [3], { floatData: [1, 2] }))).toThrow(/float_data has 2 entries; expected 3/);
    expect(() => tensorToArray(tensor('int64', [2], { int32Data: [1, 2] }))).toThrow(OnnxFormatError);
    expect(() => tensorToArray(tensor('int64', [2], { int32Data: [1, 2] }))).toThrow(/int64_data/);
    expect(() => tensorToArray(tensor('float32', [2], {}))).toThrow(/holds no data/);
    expect(() => tensorToArray(tensor('string', [1], { rawData: Uint8Array.of(65) }))).toThrow(/string_data/);
  });

  it('refuses UNDEFINED and unknown data types, and a wrong expected dtype, with UnsupportedError', () => {
    expect(() => tensorToArray(create(TensorProtoSchema, { name: 'u', dims: [1n], rawData: new Uint8Array(4) }))).toThrow(UnsupportedError);
    expect(() => tensorToArray(create(TensorProtoSchema, { name: 'u', dims: [1n], rawData: new Uint8Array(4) }))).toThrow(/UNDEFINED/);
    expect(() => tensorToArray(create(TensorProtoSchema, { name: 'n', dataType: 99, dims: [1n], rawData: new Uint8Array(4) }))).toThrow(
      /data_type 99 is not a known ONNX TensorProto\.DataType/,
    );
    expect(() => tensorToArray(arrayToTensor('f', [1], 'float32', Float32Array.of(1)), 'int32')).toThrow(/is float32; expected int32/);
  });

  it('arrayToTensor checks length and array type with InputError', () => {
    expect(() => arrayToTensor('w', [2, 2], 'float32', Float32Array.of(1, 2, 3))).toThrow(InputError);
    expect(() => arrayToTensor('w', [2, 2], 'float32', Float32Array.of(1, 2, 3))).toThrow(/dims \[2, 2\] need 4 float32 values, got 3/);
    expect(() => arrayToTensor('w', [2], 'float32', Float64Array.of(1, 2) as unknown as Float32Array)).toThrow(/must be a Float32Array, got Float64Array/);
    expect(() => arrayToTensor('w', [-1], 'float32', new Float32Array(0))).toThrow(/integers >= 0/);
  });
});

describe('float conversions', () => {
  it('float16: known values and every bit pattern round-trips', () => {
    expect([...float16ToFloat32(Uint16Array.of(0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000))]).toEqual([1, -2, 65504, 2 ** -24, Infinity, -0]);
    expect(Number.isNaN(float16BitsToNumber(0x7e00))).toBe(true);
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const v = float16BitsToNumber(h);
      if (!Number.isNaN(v) && numberToFloat16Bits(v) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });

  it('float16: rounds to nearest, ties to even, overflows to infinity', () => {
    expect([...float32ToFloat16([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 1e-8, 2 ** -25 * 3, -0, NaN])]).toEqual([
      0x3c00, 0x3c02, 0x7c00, 0x0000, 0x0002, 0x8000, 0x7e00,
    ]);
  });

  it('bfloat16', () => {
    expect([...bfloat16ToFloat32(Uint16Array.of(0x3f80, 0xc040, 0x7f80))]).toEqual([1, -3, Infinity]);
    expect([...float32ToBfloat16([1, -3, 1 + 2 ** -8, 1 + 3 * 2 ** -8])]).toEqual([0x3f80, 0xc040, 0x3f80, 0x3f82]);
  });

  it('float8 and float4 codes decode per the ONNX definitions', () => {
    expect([...float8ToFloat32(Uint8Array.of(0x00, 0x38, 0x7e, 0xb8, 0x01), 'float8e4m3fn')]).toEqual([0, 1, 448, -1, 2 ** -9]);
    expect(Number.isNaN(float8ToFloat32(Uint8Array.of(0x7f), 'float8e4m3fn')[0]!)).toBe(true);
    expect(float8ToFloat32(Uint8Array.of(0x40, 0x7f), 'float8e4m3fnuz')).toEqual(Float32Array.of(1, 240));
    expect(Number.isNaN(float8ToFloat32(Uint8Array.of(0x80), 'float8e4m3fnuz')[0]!)).toBe(true);
    expect([...float8ToFloat32(Uint8Array.of(0x3c, 0x7c, 0xfc, 0x7b), 'float8e5m2')]).toEqual([1, Infinity, -Infinity, 57344]);
    expect([...float8ToFloat32(Uint8Array.of(0x40, 0x7f), 'float8e5m2fnuz')]).toEqual([1, 57344]);
    expect([...float8ToFloat32(Uint8Array.of(127, 128, 0), 'float8e8m0')]).toEqual([1, 2, 2 ** -127]);
    expect([...float8ToFloat32(Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7, 9, 15), 'float4e2m1')]).toEqual([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -6]);
  });

  it('toFloat32 converts any numeric tensor', () => {
    const half = decodeTensor(arrayToTensor('h', [2], 'float16', Uint16Array.of(0x3c00, 0xc000)));
    expect(toFloat32(half)).toEqual(Float32Array.of(1, -2));
    const i64 = decodeTensor(arrayToTensor('i', [2], 'int64', BigInt64Array.of(5n, -6n)));
    expect(toFloat32(i64)).toEqual(Float32Array.of(5, -6));
    expect(() => toFloat32(decodeTensor(arrayToTensor('s', [1], 'string', ['a'])))).toThrow(UnsupportedError);
  });
});
