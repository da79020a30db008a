// dtype.ts spells out the ONNX data type codes instead of importing the generated enum (so the
// device path does not load the protobuf runtime); they must stay the codec's numbers.
import { describe, expect, it } from 'vitest';
import { DataType } from '../../src/onnx/dtype.js';
import { TensorProto_DataType } from '../../src/onnx/gen/onnx_pb.js';

describe('DataType', () => {
  it('has exactly the generated TensorProto_DataType names and codes', () => {
    const named = (e: object) => Object.fromEntries(Object.entries(e).filter(([k]) => Number.isNaN(Number(k))));
    expect(named(DataType)).toEqual(named(TensorProto_DataType));
  });
});
