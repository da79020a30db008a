// Clean a float model before it is split and quantised: fold BatchNormalization into the Conv in
// front of it, turn the constant bits torch emits into initializers (Constant nodes, and the
// Shape → Gather → Unsqueeze → Concat → Reshape chains whose only variable is the batch size),
// and take out Identity and inference-mode Dropout. The outputs stay the same (within float32
// rounding of the folded weights).
//
// Why before splitting: a Reshape chain that reads Shape(image) would otherwise make the image a
// hand-over tensor of every later stage; and quantisation wants Conv+BN as one Conv (onnxruntime's
// quantiser does the same fusion first).
import { clone } from '@bufbuild/protobuf';
import {
  OnnxGraph,
  OnnxModel,
  arrayToTensor,
  attrFloat,
  attrInt,
  attrTensor,
  attrFloats,
  attrInts,
  dtypeFromCode,
  inferShapes,
  tensorToArray,
  type GraphProto,
  type TensorProto,
} from '../onnx/index.js';
import { DataType } from '../onnx/dtype.js';
import { ModelProtoSchema, TensorProtoSchema } from '../onnx/gen/onnx_pb.js';
import { bypassNode, canRename, freshName, removeDead } from './graph-edit.js';

export interface PrepareReport {
  nodesBefore: number;
  nodesAfter: number;
  /** BatchNormalization nodes merged into the Conv before them. */
  batchNormFolded: { batchNorm: string; conv: string }[];
  /** BatchNormalization nodes left in the graph, and why. */
  batchNormKept: { batchNorm: string; reason: string }[];
  /** Constant nodes turned into initializers. */
  constantNodes: number;
  /** Computed integer tensors (shape arithmetic) replaced by their value. */
  foldedTensors: { tensor: string; value: number[] }[];
  /** Reshape targets computed from the batch size, replaced by a constant using 0 / -1. */
  reshapesFolded: { node: string; shape: number[] }[];
  /** Pass-through nodes taken out, per op type. */
  removed: Record<string, number>;
  /** Pass-through nodes that had to stay, and why. */
  kept: { node: string; opType: string; reason: string }[];
  deadNodes: number;
  unusedInitializers: number;
}

/**
 * Prepare a copy of `model` (the input is not changed).
 *
 * @example
 * ```ts
 * import { prepareModel } from 'edgeexit/compiler';
 * // source: an OnnxModel (src/onnx readModel); it is left as it was
 * const { model, report } = prepareModel(source);
 * console.log(report);
 * ```
 */
export function prepareModel(model: OnnxModel): { model: OnnxModel; report: PrepareReport } {
  const proto = clone(ModelProtoSchema, model.proto);
  const out = new OnnxModel(proto, model.source, model.baseDir);
  const g = out.graph;
  const report: PrepareReport = {
    nodesBefore: g.node.length,
    nodesAfter: 0,
    batchNormFolded: [],
    batchNormKept: [],
    constantNodes: 0,
    foldedTensors: [],
    reshapesFolded: [],
    removed: {},
    kept: [],
    deadNodes: 0,
    unusedInitializers: 0,
  };
  report.constantNodes = constantsToInitializers(g, model.source);
  removePassThrough(g, model.source, report);
  foldShapeArithmetic(g, model.source, report);
  foldBatchNorms(g, model.source, report);
  const dead = removeDead(g, model.source);
  report.deadNodes = dead.nodes;
  report.unusedInitializers = dead.initializers;
  report.nodesAfter = g.node.length;
  return { model: out, report };
}

// ---- Constant nodes → initializers ----

function constantTensor(node: OnnxGraph['nodes'][number]): TensorProto | undefined {
  const name = node.outputs[0]!;
  const t = attrTensor(node, 'value');
  if (t) {
    const c = clone(TensorProtoSchema, t);
    c.name = name;
    return c;
  }
  const i = attrInt(node, 'value_int');
  if (i !== undefined) return arrayToTensor(name, [], 'int64', BigInt64Array.of(BigInt(i)));
  const is = attrInts(node, 'value_ints');
  if (is) return arrayToTensor(name, [is.length], 'int64', BigInt64Array.from(is, (v) => BigInt(v)));
  const f = attrFloat(node, 'value_float');
  if (f !== undefined) return arrayToTensor(name, [], 'float32', Float32Array.of(f));
  const fs = attrFloats(node, 'value_floats');
  if (fs) return arrayToTensor(name, [fs.length], 'float32', Float32Array.from(fs));
  return undefined; // sparse or string constants: leave the node
}

function constantsToInitializers(g: GraphProto, source: string): number {
  const graph = new OnnxGraph(g, source);
  const drop = new Set<number>();
  for (const n of graph.nodes) {
    if (n.opType !== 'Constant' || n.domain !== '' || !n.outputs[0]) continue;
    // A graph output cannot be an initializer in every runtime; leave such a Constant alone.
    if (graph.outputNames.includes(n.outputs[0]) || !canRename(graph, n.outputs[0])) continue;
    const t = constantTensor(n);
    if (!t) continue;
    g.initializer.push(t);
    drop.add(n.index);
  }
  g.node = g.node.filter((_, i) => !drop.has(i));
  return drop.size;
}

// ---- Identity / Dropout ----

function isConstantFalse(graph: OnnxGraph, name: string | undefined): boolean {
  if (!name) return true;
  const t = graph.initializers.get(name);
  if (!t) return false;
  const v = tensorToArray(t);
  return v.length === 1 && Number(v[0]) === 0;
}

function removePassThrough(g: GraphProto, source: string, report: PrepareReport): void {
  // One node per round: each removal renames tensors, so the index is rebuilt after it. Nodes
  // that must stay are remembered by their proto object (unnamed nodes' labels shift).
  const skip = new Set<object>();
  for (;;) {
    const graph = new OnnxGraph(g, source);
    const node = graph.nodes.find((n) => n.domain === '' && (n.opType === 'Identity' || n.opType === 'Dropout') && !skip.has(n.proto));
    if (!node) return;
    skip.add(node.proto);
    let reason: string | undefined;
    if (node.opType === 'Dropout') {
      const mask = node.outputs[1];
      if (mask && (graph.consumers(mask).length > 0 || graph.outputNames.includes(mask))) reason = 'its mask output is used';
      else if (!isConstantFalse(graph, node.inputs[2])) reason = 'its training_mode input is not a constant false';
    }
    if (!reason) {
      const r = bypassNode(g, graph, node.index);
      if (r.removed) {
        report.removed[node.opType] = (report.removed[node.opType] ?? 0) + 1;
        continue;
      }
      reason = r.reason;
    }
    report.kept.push({ node: node.name, opType: node.opType, reason });
  }
}

// ---- shape arithmetic ----

const INTEGER_TYPES = new Set<number>([DataType.INT64, DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT8, DataType.BOOL]);

function sameValues(a: readonly number[] | undefined, b: readonly number[] | undefined): boolean {
  return !!a && !!b && a.length === b.length && a.every((v, i) => v === b[i]);
}

function integerTensor(name: string, dtype: number, dims: number[], values: number[]): TensorProto {
  const d = dtypeFromCode(dtype);
  switch (d) {
    case 'int64':
      return arrayToTensor(name, dims, 'int64', BigInt64Array.from(values, (v) => BigInt(v)));
    case 'int32':
      return arrayToTensor(name, dims, 'int32', Int32Array.from(values));
    case 'int16':
      return arrayToTensor(name, dims, 'int16', Int16Array.from(values));
    case 'int8':
      return arrayToTensor(name, dims, 'int8', Int8Array.from(values));
    case 'uint8':
      return arrayToTensor(name, dims, 'uint8', Uint8Array.from(values));
    default:
      return arrayToTensor(name, dims, 'bool', Uint8Array.from(values, (v) => (v ? 1 : 0)));
  }
}

/**
 * Shape inference evaluates small integer tensors. Running it at two batch sizes tells which
 * of them are true constants (same value at both) and which follow the batch: the first become
 * initializers; a Reshape target that differs only where the batch goes is rewritten with 0
 * (copy that dimension) or -1 (infer it), which is what makes the chain dead.
 */
function foldShapeArithmetic(g: GraphProto, source: string, report: PrepareReport): void {
  const graph = new OnnxGraph(g, source);
  // 2 and 3, not 1: a batch of 1 is indistinguishable from a broadcast dimension.
  const a = inferShapes(graph, { dynamicDim: 2 });
  const b = inferShapes(graph, { dynamicDim: 3 });
  const outputs = new Set(graph.outputNames);
  const dropNodes = new Set<number>();
  const taken = graph.tensorNames();

  for (const n of graph.nodes) {
    if (n.opType === 'Constant' || n.outputs.length === 0) continue;
    const foldable = (o: string) => {
      const info = a.tensors.get(o);
      return !!info?.shape && INTEGER_TYPES.has(info.dtype) && sameValues(a.constants.get(o), b.constants.get(o)) && !outputs.has(o) && canRename(graph, o);
    };
    const unused = (o: string) => !o || (graph.consumers(o).length === 0 && !outputs.has(o));
    if (!n.outputs.some((o) => o && foldable(o)) || !n.outputs.every((o) => unused(o) || foldable(o))) continue;
    for (const o of n.outputs) {
      if (!o || unused(o)) continue;
      const info = a.tensors.get(o)!;
      const value = a.constants.get(o)!;
      g.initializer.push(integerTensor(o, info.dtype, info.shape!, value));
      report.foldedTensors.push({ tensor: o, value });
    }
    dropNodes.add(n.index);
  }

  for (const n of graph.nodes) {
    if (n.opType !== 'Reshape' || n.domain !== '' || dropNodes.has(n.index)) continue;
    const target = n.inputs[1];
    if (!target || graph.isInitializer(target) || report.foldedTensors.some((f) => f.tensor === target)) continue;
    const va = a.constants.get(target);
    const vb = b.constants.get(target);
    const ia = a.tensors.get(n.inputs[0]!)?.shape;
    const ib = b.tensors.get(n.inputs[0]!)?.shape;
    if (!va || !vb || va.length !== vb.length || !ia || !ib) continue;
    const allowZero = attrInt(n, 'allowzero', 0) !== 0;
    const shape: number[] = [];
    const varying: number[] = [];
    va.forEach((v, i) => {
      if (v === vb[i]) shape.push(v);
      else if (!allowZero && ia[i] === v && ib[i] === vb[i]) shape.push(0);
      else {
        varying.push(i);
        shape.push(-1);
      }
    });
    const minusOnes = shape.filter((v) => v === -1).length;
    if (varying.length > 1 || minusOnes > 1) continue;
    const name = freshName(taken, `${n.outputs[0] ?? n.name}_shape`);
    g.initializer.push(arrayToTensor(name, [shape.length], 'int64', BigInt64Array.from(shape, (v) => BigInt(v))));
    const proto = g.node[n.index]!;
    proto.input[1] = name;
    report.reshapesFolded.push({ node: n.name, shape });
  }
  g.node = g.node.filter((_, i) => !dropNodes.has(i));
}

// ---- BatchNormalization → Conv ----

function floatInit(graph: OnnxGraph, name: string | undefined): Float32Array | undefined {
  if (!name) return undefined;
  const t = graph.initializers.get(name);
  if (!t || t.dataType !== DataType.FLOAT) return undefined;
  return tensorToArray(t, 'float32');
}

function foldBatchNorms(g: GraphProto, source: string, report: PrepareReport): void {
  const graph = new OnnxGraph(g, source);
  const taken = graph.tensorNames();
  // How many nodes read each weight: a shared weight is copied, not changed in place.
  const readers = (t: string) => graph.consumers(t).length;
  const replaceInit = new Map<string, TensorProto>();
  const addInit: TensorProto[] = [];
  const dropNodes = new Set<number>();
  const renames: { conv: number; to: string }[] = [];

  for (const bn of graph.nodes) {
    if (bn.opType !== 'BatchNormalization' || bn.domain !== '') continue;
    const keep = (reason: string) => report.batchNormKept.push({ batchNorm: bn.name, reason });
    const x = bn.inputs[0];
    const conv = x ? graph.producer(x) : undefined;
    if (!x || !conv || conv.opType !== 'Conv' || conv.domain !== '') {
      keep(`its input is not the output of a Conv (${conv ? conv.opType : 'a graph input or weight'})`);
      continue;
    }
    if (attrInt(bn, 'spatial', 1) === 0) {
      keep('it normalises per activation (spatial = 0), not per channel');
      continue;
    }
    if (attrInt(bn, 'training_mode', 0) !== 0 || bn.outputs.slice(1).some((o) => o)) {
      keep('it is in training mode (running statistics are outputs)');
      continue;
    }
    if (graph.consumers(x).length !== 1 || graph.outputNames.includes(x) || !canRename(graph, x)) {
      keep(`the Conv output '${x}' is also read elsewhere`);
      continue;
    }
    const [scale, bias, mean, variance] = [1, 2, 3, 4].map((i) => floatInit(graph, bn.inputs[i]));
    const w = graph.initializers.get(conv.inputs[1] ?? '');
    if (!scale || !bias || !mean || !variance || !w || w.dataType !== DataType.FLOAT) {
      keep('its parameters or the Conv weight are not float32 initializers');
      continue;
    }
    const convBias = conv.inputs[2] ? floatInit(graph, conv.inputs[2]) : undefined;
    if (conv.inputs[2] && !convBias) {
      keep('the Conv bias is not a float32 initializer');
      continue;
    }
    const dims = w.dims.map(Number);
    const cout = dims[0]!;
    if ([scale, bias, mean, variance].some((v) => v.length !== cout) || (convBias && convBias.length !== cout)) {
      keep(`its parameters do not have one value per Conv output channel (${cout})`);
      continue;
    }
    const eps = attrFloat(bn, 'epsilon', 1e-5);
    // float64 arithmetic, rounded once to float32 when written: y = (conv(x) - mean) * s + bias
    // with s = scale / sqrt(var + eps), so W' = W * s and b' = (b - mean) * s + bias.
    const weights = tensorToArray(w, 'float32');
    const per = weights.length / cout;
    const newW = new Float32Array(weights.length);
    const newB = new Float32Array(cout);
    for (let c = 0; c < cout; c++) {
      const s = scale[c]! / Math.sqrt(variance[c]! + eps);
      for (let i = c * per; i < (c + 1) * per; i++) newW[i] = weights[i]! * s;
      newB[c] = ((convBias ? convBias[c]! : 0) - mean[c]!) * s + bias[c]!;
    }
    const convProto = g.node[conv.index]!;
    const wName = conv.inputs[1]!;
    if (readers(wName) === 1 && !replaceInit.has(wName)) {
      replaceInit.set(wName, arrayToTensor(wName, dims, 'float32', newW));
    } else {
      const name = freshName(taken, `${wName}_bnfolded`);
      addInit.push(arrayToTensor(name, dims, 'float32', newW));
      convProto.input[1] = name;
    }
    const bName = conv.inputs[2];
    if (bName && readers(bName) === 1 && !replaceInit.has(bName)) {
      replaceInit.set(bName, arrayToTensor(bName, [cout], 'float32', newB));
    } else {
      const name = freshName(taken, `${bn.outputs[0]}_bias`);
      addInit.push(arrayToTensor(name, [cout], 'float32', newB));
      if (convProto.input.length < 3) convProto.input.push(name);
      else convProto.input[2] = name;
    }
    dropNodes.add(bn.index);
    renames.push({ conv: conv.index, to: bn.outputs[0]! });
    report.batchNormFolded.push({ batchNorm: bn.name, conv: conv.name });
  }

  g.initializer = g.initializer.map((t) => replaceInit.get(t.name) ?? t);
  g.initializer.push(...addInit);
  // The Conv now writes the BN's output name, so everything downstream stays as it was.
  const goneNames = new Set<string>();
  for (const r of renames) {
    const p = g.node[r.conv]!;
    goneNames.add(p.output[0]!);
    p.output[0] = r.to;
  }
  g.node = g.node.filter((_, i) => !dropNodes.has(i));
  g.valueInfo = g.valueInfo.filter((v) => !goneNames.has(v.name));
}

/**
 * How many nodes of an op type (default domain) the model holds.
 *
 * @example
 * ```ts
 * import { countOps, prepareModel } from 'edgeexit/compiler';
 * const { model } = prepareModel(source);
 * countOps(model, 'BatchNormalization'); // 0: folded into the convolutions
 * ```
 */
export function countOps(model: OnnxModel, opType: string): number {
  return model.graph.node.filter((n) => n.opType === opType && (n.domain === '' || n.domain === 'ai.onnx')).length;
}
