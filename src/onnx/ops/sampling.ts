// Ops that shape inference has no rule for, listed because the float16 pass must keep them
// float32: coordinate sampling, box selection and random generators. Their outputs stay unknown
// (the node is reported unresolved), exactly as for an op missing from the table.
import { ELEMENTWISE, keepFp32, type Fp16Policy, type OpSpec } from './spec.js';

function unshaped(op: string, fp16: Fp16Policy): OpSpec {
  return { op, shape: null, cost: ELEMENTWISE, fp16, quant: 'float' };
}

const RANDOM = keepFp32('random generator; output dtype set by attribute');

export const SAMPLING_OPS: readonly OpSpec[] = [
  unshaped('GridSample', keepFp32('sampling coordinates lose precision in float16')),
  unshaped('RoiAlign', keepFp32('box coordinates lose precision in float16')),
  unshaped('NonMaxSuppression', keepFp32('the ONNX schema has no float16 NonMaxSuppression')),
  ...['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli'].map((op) => unshaped(op, RANDOM)),
  unshaped('EyeLike', keepFp32('output dtype set by attribute')),
];
