// The op table (src/onnx/ops) holds each op's shape rule, cost rule, fp16 policy and int8 role.
// These tests check that every entry has all four, and that the op lists the four passes kept
// before the table existed are all still there with the same meaning: nothing was lost or
// changed in the move. The lists below are those of the pre-table code, copied verbatim.
import { describe, expect, it } from 'vitest';
import { DEFAULT_BLOCK_OPS } from '../../src/compiler/fp16.js';
import { ACTIVATION_OPS, PASS_THROUGH_OPS, SILENT_OPS, WEIGHTED_OPS } from '../../src/compiler/quantize/ops.js';
import { DataType, OPS, fp16KeepReasons, inferShapes, modelCost, opSpec, opsWithQuantRole, type OpSpec } from '../../src/onnx/index.js';
import { buildModel, node, tensorValueInfo } from './helpers.js';

const UNARY = [
  'Relu', 'LeakyRelu', 'PRelu', 'Sigmoid', 'Tanh', 'Clip', 'HardSigmoid', 'HardSwish', 'Elu', 'Selu', 'Celu', 'Softplus',
  'Softsign', 'Exp', 'Log', 'Sqrt', 'Neg', 'Abs', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Erf', 'Sin', 'Cos', 'Tan',
  'Asin', 'Acos', 'Atan', 'Sinh', 'Cosh', 'Sign', 'Mish', 'Gelu', 'Identity', 'Softmax', 'LogSoftmax', 'Hardmax',
  'ThresholdedRelu', 'LRN', 'InstanceNormalization', 'LayerNormalization', 'GroupNormalization', 'BatchNormalization',
  'Dropout', 'Shrink', 'CumSum', 'MeanVarianceNormalization', 'Not', 'IsNaN', 'IsInf', 'BitwiseNot',
];
const BROADCAST = [
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Mod', 'Max', 'Min', 'Sum', 'Mean', 'BitShift', 'And', 'Or', 'Xor', 'Equal', 'Less',
  'Greater', 'LessOrEqual', 'GreaterOrEqual', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor', 'Where',
];
const REDUCE = [
  'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp',
  'ReduceSumSquare',
];
/** The cases of the old inferNode switch. */
const SWITCH = [
  'Constant', 'Cast', 'CastLike', 'Shape', 'Size', 'Conv', 'ConvInteger', 'QLinearConv', 'ConvTranspose', 'MaxPool',
  'AveragePool', 'LpPool', 'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool', 'Gemm', 'MatMul', 'MatMulInteger',
  'QLinearMatMul', 'Flatten', 'Reshape', 'Transpose', 'Concat', 'Split', 'Squeeze', 'Unsqueeze', 'Gather', 'Slice',
  'ConstantOfShape', 'Expand', 'Tile', 'Pad', 'Resize', 'Upsample', 'ArgMax', 'ArgMin', 'TopK', 'Range', 'DepthToSpace',
  'SpaceToDepth', 'QuantizeLinear', 'DequantizeLinear',
];
const MAC_OPS = ['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'ConvInteger', 'QLinearConv', 'MatMulInteger', 'QLinearMatMul'];
const NO_COMPUTE = [
  'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Transpose', 'Identity', 'Dropout', 'Shape', 'Size', 'Gather', 'Concat',
  'Split', 'Slice', 'Constant', 'ConstantOfShape', 'Cast', 'CastLike', 'Expand', 'Tile', 'Pad', 'Range', 'DepthToSpace',
  'SpaceToDepth',
];
const SHAPE_SLOTS: Record<string, number[]> = {
  Reshape: [1], Expand: [1], Tile: [1], Slice: [1, 2, 3, 4], Pad: [1, 2, 3], Resize: [1, 2, 3], Upsample: [1], Unsqueeze: [1],
  Squeeze: [1], ConstantOfShape: [0], TopK: [1], Split: [1], Range: [0, 1, 2], Gather: [1], ReduceMean: [1], ReduceSum: [1],
  ReduceMax: [1], ReduceMin: [1], ReduceProd: [1], ReduceL1: [1], ReduceL2: [1], ReduceLogSum: [1], ReduceLogSumExp: [1],
  ReduceSumSquare: [1], Clip: [1, 2],
};
const RANDOM = 'random generator; output dtype set by attribute';
const RESAMPLE = 'sampling coordinates lose precision in float16; scales input must stay float32';
const QSCALES = 'quantisation scales must stay float32';
const BLOCK_OPS: Record<string, string> = {
  Resize: RESAMPLE, Upsample: RESAMPLE, GridSample: 'sampling coordinates lose precision in float16', RoiAlign: 'box coordinates lose precision in float16',
  Range: 'the ONNX schema has no float16 Range', NonMaxSuppression: 'the ONNX schema has no float16 NonMaxSuppression',
  CumSum: 'running sums overflow or lose small terms in float16', TopK: 'float16 ties change which indices are selected',
  RandomNormal: RANDOM, RandomUniform: RANDOM, RandomNormalLike: RANDOM, RandomUniformLike: RANDOM, Multinomial: RANDOM, Bernoulli: RANDOM,
  EyeLike: 'output dtype set by attribute', QuantizeLinear: QSCALES, DequantizeLinear: QSCALES, DynamicQuantizeLinear: QSCALES,
};
const FLOAT32_ONLY_INPUTS: Record<string, number[]> = { Resize: [2], Upsample: [1] };
const QUANT: Record<string, string[]> = {
  weighted: ['Conv', 'Gemm', 'MatMul'],
  activation: ['Add', 'AveragePool', 'GlobalAveragePool'],
  'pass-through': ['MaxPool', 'Relu', 'Clip', 'Flatten', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze'],
  silent: ['Identity', 'Constant', 'Shape', 'Cast', 'ConstantOfShape'],
};

const specs = [...OPS.values()];
const opsWhere = (keep: (s: OpSpec) => boolean) => specs.filter(keep).map((s) => s.op).sort();
const sorted = (xs: Iterable<string>) => [...xs].sort();

describe('op table', () => {
  it('gives every op a shape rule, a cost rule, an fp16 policy and an int8 role', () => {
    expect(specs.length).toBeGreaterThan(100);
    const problems: string[] = [];
    for (const [key, s] of OPS) {
      const say = (what: string) => problems.push(`${key}: ${what}`);
      if (s.op !== key) say(`filed under '${key}' but names itself '${s.op}'`);
      if (!(s.shape === null || typeof s.shape === 'function')) say('shape is neither a rule nor an explicit null');
      if (!['macs', 'elementwise', 'none'].includes(s.cost?.work)) say(`cost.work is ${String(s.cost?.work)}`);
      if ((s.cost?.work === 'macs') !== (typeof s.cost?.macs === 'function')) say('a MAC rule must be present exactly when cost.work is macs');
      if (!Array.isArray(s.cost?.shapeInputs) || s.cost.shapeInputs.some((i) => !Number.isInteger(i) || i < 0)) say('cost.shapeInputs is not a list of input slots');
      if (!['convert', 'keep-fp32'].includes(s.fp16?.mode)) say(`fp16.mode is ${String(s.fp16?.mode)}`);
      if ((s.fp16?.mode === 'keep-fp32') !== (typeof s.fp16?.reason === 'string' && s.fp16.reason.length > 0)) say('a reason must be given exactly when fp16 keeps the op float32');
      if (!Array.isArray(s.fp16?.float32Inputs)) say('fp16.float32Inputs is missing');
      if (!['weighted', 'activation', 'pass-through', 'silent', 'float'].includes(s.quant)) say(`quant is ${String(s.quant)}`);
    }
    expect(problems).toEqual([]);
  });

  it('keeps a shape rule for every op the old inferNode handled, and no more', () => {
    expect(opsWhere((s) => s.shape !== null)).toEqual(sorted([...UNARY, ...BROADCAST, ...REDUCE, ...SWITCH]));
  });

  it('keeps the old cost classes: MAC ops, data-movement ops, everything else elementwise', () => {
    expect(opsWhere((s) => s.cost.work === 'macs')).toEqual(sorted(MAC_OPS));
    expect(opsWhere((s) => s.cost.work === 'none')).toEqual(sorted(NO_COMPUTE));
    const slots = Object.fromEntries(specs.filter((s) => s.cost.shapeInputs.length > 0).map((s) => [s.op, [...s.cost.shapeInputs]]));
    expect(slots).toEqual(SHAPE_SLOTS);
  });

  it('keeps the old fp16 block list with its reasons, and the float32-only inputs', () => {
    expect(fp16KeepReasons()).toEqual(BLOCK_OPS);
    expect(DEFAULT_BLOCK_OPS).toEqual(BLOCK_OPS);
    const f32Inputs = Object.fromEntries(specs.filter((s) => s.fp16.float32Inputs.length > 0).map((s) => [s.op, [...s.fp16.float32Inputs]]));
    expect(f32Inputs).toEqual(FLOAT32_ONLY_INPUTS);
  });

  it('keeps the old int8 roles, and the quantiser reads them from the table', () => {
    for (const [role, ops] of Object.entries(QUANT)) expect(sorted(opsWithQuantRole(role as OpSpec['quant'])), role).toEqual(sorted(ops));
    expect(sorted(WEIGHTED_OPS)).toEqual(sorted(QUANT.weighted!));
    expect(sorted(ACTIVATION_OPS)).toEqual(sorted(QUANT.activation!));
    expect(sorted(PASS_THROUGH_OPS)).toEqual(sorted(QUANT['pass-through']!));
    expect(sorted(SILENT_OPS)).toEqual(sorted(QUANT.silent!));
  });

  it('answers only for the default domain', () => {
    expect(opSpec('', 'Conv')?.op).toBe('Conv');
    expect(opSpec('com.microsoft', 'Conv')).toBeUndefined();
    expect(opSpec('', 'NoSuchOp')).toBeUndefined();
  });

  it('leaves outputs unknown, with the old reason, for ops without a shape rule, unknown ops and other domains', () => {
    const relu = node('Relu', ['x'], ['other']);
    relu.domain = 'com.example';
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1, 3, 4, 4])],
      outputs: ['grid', 'made_up', 'other', 'ok'],
      nodes: [node('GridSample', ['x', 'x'], ['grid']), node('MadeUp', ['x'], ['made_up']), relu, node('Relu', ['x'], ['ok'])],
    });
    const r = inferShapes(model);
    expect(r.unresolved.map((u) => u.reason)).toEqual(['no shape rule for GridSample', 'no shape rule for MadeUp', 'no shape rule for com.example::Relu']);
    // The element type of input 0 is kept so extracted stages still get typed inputs.
    expect(r.tensors.get('grid')).toEqual({ dtype: DataType.FLOAT });
    expect(r.tensors.get('ok')).toEqual({ dtype: DataType.FLOAT, shape: [1, 3, 4, 4] });
    // Unknown ops cost nothing they can be charged for: no shape, no elementwise count.
    const cost = modelCost(model);
    expect(cost.nodes.map((n) => n.elementwise)).toEqual([0, 0, 0, 48]);
  });
});
