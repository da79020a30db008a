// Static int8 quantisation of one float stage in QDQ form, the format onnxruntime recommends and
// TensorRT reads: activations get QuantizeLinear → DequantizeLinear pairs with calibrated scales,
// weights are stored already quantised (int8 initializer → DequantizeLinear, per channel), biases
// as int32 with zero-point 0 and scale = input scale × weight scale. onnxruntime's graph optimiser
// then fuses DQ → Conv → Q into QLinearConv and friends. Exits and the image stay float32; a tensor
// one stage hands to the next may travel as its int8 codes instead (`handOver` / `int8Inputs`):
// the producer's QuantizeLinear output is the graph output and the reader starts from its
// DequantizeLinear, so no DequantizeLinear → QuantizeLinear pair (nor a float copy four times the
// size) sits between two sessions. Nodes the pass cannot handle stay float with a one-line warning.
import { clone, create } from '@bufbuild/protobuf';
import { UnsupportedError } from '../../util/errors.js';
import { DataType, OnnxGraph, OnnxModel, arrayToTensor, attrFloat, attrInt, tensorDims, tensorToArray, type GraphNode, type NodeProto, type TensorProto, type ValueInfoProto } from '../../onnx/index.js';
import { AttributeProtoSchema, AttributeProto_AttributeType, ModelProtoSchema, NodeProtoSchema } from '../../onnx/gen/onnx_pb.js';
import { freshName, removeDead } from '../graph-edit.js';
import { ACTIVATION_OPS, PASS_THROUGH_OPS, SILENT_OPS, WEIGHTED_OPS, activationInputs } from './ops.js';
import { activationQParams, quantizeBias, quantizeWeight, quantizeWeightWithScales, type QParams, type QuantScheme } from './qparams.js';
import type { StageRanges } from './calibrate.js';

/**
 * Pass-through ops that ONNX defines on int8 and uint8 tensors. When one of them produces a tensor
 * handed over as codes it runs on the codes directly: onnxruntime will not drop the Q/DQ pair
 * around an op whose QuantizeLinear writes a graph output, so in QDQ form it would run in float.
 */
const CODE_OPS = new Set(['MaxPool', 'Flatten', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze']);

/** Per-channel DequantizeLinear (the axis attribute) arrived in opset 13. */
export const MIN_QDQ_OPSET = 13;
/** Ops whose signature changed between opset 7 and 13: raising the opset under them would change their meaning. */
const CHANGED_BY_OPSET_13 = new Set(['Softmax', 'LogSoftmax', 'Hardmax', 'Squeeze', 'Unsqueeze', 'Split', 'ReduceSum', 'Clip', 'Pad', 'Resize', 'Upsample', 'Slice', 'TopK', 'Dropout', 'BatchNormalization', 'Scan', 'If', 'Loop']);

export interface QuantizeStageOptions {
  scheme: QuantScheme;
  /** Calibrated activation ranges of this stage. */
  ranges: StageRanges;
  /** Node names to leave float (mixed precision). */
  keepFloat?: ReadonlySet<string>;
  /**
   * Parameters an earlier stage used for the tensors it handed over (its `outputParams`): reusing
   * them makes re-quantising a carried tensor exact instead of rounding it a second time.
   */
  inputParams?: ReadonlyMap<string, QParams>;
  /**
   * Graph outputs to hand to later stages as int8 codes (the QuantizeLinear output) rather than
   * float, where they are quantised; the report's `int8Outputs` says which were, with what
   * parameters. Exits never are: they are scored as float logits.
   */
  handOver?: ReadonlySet<string>;
  /**
   * Graph inputs that arrive as int8 codes, with the parameters an earlier stage quantised them
   * with (its `int8Outputs`): the stage reads them through a DequantizeLinear of its own.
   */
  int8Inputs?: ReadonlyMap<string, QParams>;
}

export interface NodeQuantInfo {
  node: string;
  op: string;
}

export interface QuantizeStageReport {
  /** Nodes with int8 weights or int8 arithmetic. */
  quantized: NodeQuantInfo[];
  /** Pass-through nodes kept in the int8 domain. */
  passThrough: NodeQuantInfo[];
  /** Nodes left float, with why. */
  float: (NodeQuantInfo & { reason: string })[];
  /** One line per node the quantiser could not handle. */
  warnings: string[];
  /** Nodes whose weight scale was raised so the int32 bias does not overflow. */
  biasAdjusted: string[];
  opset: { from: number; to: number };
  /** Parameters of the graph outputs that were quantised (for the next stage's inputParams). */
  outputParams: Map<string, QParams>;
  /** Graph outputs handed over as int8 codes, with their parameters (for the next stage's int8Inputs). */
  int8Outputs: Map<string, QParams>;
  /** Graph inputs read as int8 codes. */
  int8Inputs: string[];
}

function attr(name: string, value: number): ReturnType<typeof create<typeof AttributeProtoSchema>> {
  return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) });
}

function node(op: string, name: string, inputs: string[], outputs: string[], axis?: number): NodeProto {
  return create(NodeProtoSchema, { opType: op, name, input: inputs, output: outputs, attribute: axis === undefined ? [] : [attr('axis', axis)] });
}

function zpTensor(name: string, p: QParams, dims: number[]): TensorProto {
  return p.type === 'uint8' ? arrayToTensor(name, dims, 'uint8', Uint8Array.from(p.zeroPoint)) : arrayToTensor(name, dims, 'int8', Int8Array.from(p.zeroPoint));
}

/** Declare a graph input's or output's element type (its shape stays). */
function setElemType(v: ValueInfoProto, elemType: DataType): void {
  if (v.type?.value.case === 'tensorType') v.type.value.value.elemType = elemType;
}

/** Raise the default-domain opset to 13 when lower, refusing where that changes an op's meaning. */
function ensureOpset(model: OnnxModel, graph: OnnxGraph): { from: number; to: number } {
  const from = model.opsetVersion('') ?? 1;
  if (from >= MIN_QDQ_OPSET) return { from, to: from };
  const bad = graph.nodes.filter((n) => n.domain === '' && CHANGED_BY_OPSET_13.has(n.opType));
  if (bad.length > 0) {
    throw new UnsupportedError(
      `${model.source}: opset ${from} is below ${MIN_QDQ_OPSET}, which per-channel int8 needs, and raising it would change ${bad
        .slice(0, 3)
        .map((n) => `'${n.name}' (${n.opType})`)
        .join(', ')}; re-export the model with opset_version=13 or later`,
    );
  }
  model.setOpsetVersion(model.proto.opsetImport.some((o) => o.domain === 'ai.onnx') ? 'ai.onnx' : '', MIN_QDQ_OPSET);
  return { from, to: MIN_QDQ_OPSET };
}

/** Weight channel axis per onnxruntime: Conv 0, Gemm 0 with transB else 1, MatMul the last. */
function weightAxis(n: GraphNode, dims: readonly number[]): number {
  if (n.opType === 'Conv') return 0;
  if (n.opType === 'Gemm') return attrInt(n, 'transB', 0) === 1 ? 0 : 1;
  return dims.length - 1;
}

/** Why a weighted node cannot be quantised as it stands, or undefined when it can. */
function weightedProblem(graph: OnnxGraph, n: GraphNode): string | undefined {
  const w = n.inputs[1];
  if (n.opType === 'Conv') {
    if (!w || !graph.initializers.has(w)) return 'its weight is not a constant initializer';
  }
  if (n.opType === 'Gemm') {
    if (attrInt(n, 'transA', 0) !== 0) return 'transA=1 is not supported';
    if (attrFloat(n, 'alpha', 1) !== 1 || attrFloat(n, 'beta', 1) !== 1) return 'alpha/beta other than 1 are not supported';
  }
  for (const t of [w, n.inputs[2]]) {
    const init = t ? graph.initializers.get(t) : undefined;
    if (init && tensorToArray(init).constructor !== Float32Array) return `initializer '${t}' is not float32`;
  }
  return undefined;
}

/** Quantise one stage model; returns a new model (the input is left as it was). */
export function quantizeStage(source: OnnxModel, opts: QuantizeStageOptions): { model: OnnxModel; report: QuantizeStageReport } {
  const model = new OnnxModel(clone(ModelProtoSchema, source.proto), source.source, source.baseDir);
  const g = model.graph;
  const graph = OnnxGraph.of(model);
  const opset = ensureOpset(model, graph);
  const { scheme } = opts;
  const keep = opts.keepFloat ?? new Set<string>();
  const report: QuantizeStageReport = { quantized: [], passThrough: [], float: [], warnings: [], biasAdjusted: [], opset, outputParams: new Map(), int8Outputs: new Map(), int8Inputs: [] };
  const ranges = new Map(opts.ranges);
  const outputs = new Set(graph.outputNames);
  const order = graph.topologicalOrder();

  // A Relu/Clip right after a quantised op lends that op's output its own (clipped) range, so the
  // op's int8 output already does the clipping (onnxruntime's adjust_tensor_ranges). Symmetric
  // schemes keep both ranges: a zero zero-point cannot express the clipped range.
  /** Relu/Clip nodes whose input took their range. */
  const clipped = new Set<GraphNode>();
  if (!scheme.activationSymmetric) {
    for (const n of order) {
      if ((n.opType !== 'Relu' && n.opType !== 'Clip') || keep.has(n.name)) continue;
      const x = n.inputs[0]!;
      const p = graph.producer(x);
      if (!p || !(WEIGHTED_OPS.has(p.opType) || ACTIVATION_OPS.has(p.opType)) || keep.has(p.name)) continue;
      if (graph.consumers(x).length !== 1 || outputs.has(x)) continue;
      const r = ranges.get(n.outputs[0]!);
      if (r) {
        ranges.set(x, r);
        clipped.add(n);
      }
    }
  }

  // 1. Decide, in topological order, which nodes run quantised and each tensor's parameters.
  const params = new Map<string, QParams>();
  /** Graph inputs that arrive as int8 codes. */
  const codesIn = new Set<string>();
  for (const t of graph.inputNames) {
    const code = opts.int8Inputs?.get(t);
    const p = code ?? opts.inputParams?.get(t);
    if (code) codesIn.add(t);
    if (p && (code || p.type === scheme.activationType)) params.set(t, p);
  }
  /** Graph outputs handed over as codes: quantised, not exits (exits are not in handOver). */
  const codesOut = (t: string) => opts.handOver?.has(t) === true && outputs.has(t) && !graph.isGraphInput(t);
  const quantNodes = new Set<GraphNode>();
  const paramsFor = (t: string): QParams | undefined => {
    if (!params.has(t)) {
      const r = ranges.get(t);
      if (!r) return undefined;
      params.set(t, activationQParams(r, scheme));
    }
    return params.get(t);
  };
  const floatNode = (n: GraphNode, reason: string, warn: boolean) => {
    report.float.push({ node: n.name, op: n.opType, reason });
    if (warn) report.warnings.push(`warn: node '${n.name}' (${n.opType}) stays float: ${reason}`);
  };
  for (const n of order) {
    const op = n.domain === '' ? n.opType : `${n.domain}::${n.opType}`;
    if (keep.has(n.name)) {
      floatNode(n, 'kept float (mixed precision)', false);
      continue;
    }
    const acts = activationInputs(graph, n);
    const out = n.outputs[0];
    if (WEIGHTED_OPS.has(op) || ACTIVATION_OPS.has(op)) {
      const problem = WEIGHTED_OPS.has(op) ? weightedProblem(graph, n) : op === 'Add' && acts.length !== 2 ? 'only Add of two activations is quantised' : undefined;
      const missing = [...acts, out!].filter((t) => !ranges.has(t));
      if (problem || missing.length > 0) {
        floatNode(n, problem ?? `no calibrated range for ${missing.map((t) => `'${t}'`).join(', ')}`, true);
        continue;
      }
      for (const t of acts) paramsFor(t);
      paramsFor(out!);
      quantNodes.add(n);
      report.quantized.push({ node: n.name, op });
    } else if (PASS_THROUGH_OPS.has(op)) {
      const x = n.inputs[0]!;
      const p = params.get(x) ?? paramsFor(x);
      if (!p || !out) {
        floatNode(n, 'its input has no calibrated range', false);
        continue;
      }
      // Shared parameters: the op moves int8 codes, so in and out must mean the same reals.
      if (!params.has(out)) params.set(out, p);
      quantNodes.add(n);
      report.passThrough.push({ node: n.name, op });
    } else {
      floatNode(n, `the quantiser has no int8 rule for ${op}`, !SILENT_OPS.has(op));
    }
  }

  // 2. Rewrite: weights and biases first (they only read initializers), then each node followed by
  // the Q/DQ pair of every quantised tensor it produces.
  const taken = graph.tensorNames();
  for (const n of graph.nodes) if (n.name) taken.add(n.name);
  const newInits: TensorProto[] = [];
  const head: NodeProto[] = [];
  /** tensor → what quantised readers read instead (its DequantizeLinear output). */
  const dq = new Map<string, string>();
  /** graph outputs renamed so that the DequantizeLinear can produce the original name. */
  const floatName = new Map<string, string>();
  /** tensor → the tensor holding its int8 codes (its QuantizeLinear output, or itself when it is codes). */
  const codes = new Map<string, string>();
  /** Pass-through nodes that run on the codes of their input and write codes handed over. */
  const direct = new Set<GraphNode>();
  for (const n of quantNodes) {
    const [x, y] = [n.inputs[0], n.outputs[0]];
    const shared = x && y && params.get(x) !== undefined && params.get(x) === params.get(y);
    if (CODE_OPS.has(n.opType) && n.domain === '' && n.outputs.filter(Boolean).length === 1 && shared && codesOut(y)) direct.add(n);
  }

  // A clipped Relu/Clip between two quantised parts is left out of the rewritten graph: the
  // producer's QuantizeLinear, with the Relu's range, already clips, so DQ → Relu → Q would
  // compute nothing. onnxruntime fuses such a Relu into a Conv, but not after an Add (a ResNet's
  // residual), nor when its QuantizeLinear writes a graph output (a stage boundary).
  /** Left-out Relu/Clip → its input, which the producer now writes under the Relu's output name. */
  const redundant = new Map<GraphNode, string>();
  const alias = new Map<string, string>();
  for (const n of clipped) {
    const [x, y] = [n.inputs[0]!, n.outputs[0]!];
    const p = graph.producer(x);
    if (p && quantNodes.has(p) && quantNodes.has(n) && params.get(x) !== undefined && params.get(x) === params.get(y)) {
      redundant.set(n, x);
      alias.set(x, y);
    }
  }

  const qdqNodes = (t: string, p: QParams, fromCodes = false): NodeProto[] => {
    const scale = freshName(taken, `${t}/scale`);
    const zp = freshName(taken, `${t}/zero_point`);
    newInits.push(arrayToTensor(scale, [], 'float32', Float32Array.of(p.scale[0]!)), zpTensor(zp, p, []));
    if (codesIn.has(t) || fromCodes) {
      // Codes in (or written as codes by a pass-through op): only the DequantizeLinear, which
      // every reader reads (float readers too).
      const dst = freshName(taken, `${t}/dequantized`);
      dq.set(t, dst);
      codes.set(t, t);
      floatName.set(t, dst);
      if (fromCodes) report.int8Outputs.set(t, p);
      return [node('DequantizeLinear', freshName(taken, `${t}/DequantizeLinear`), [t, scale, zp], [dst])];
    }
    if (codesOut(t)) {
      // Codes out: the QuantizeLinear writes the graph output; readers inside the stage read its
      // DequantizeLinear (quantised ones) or the float original (float ones).
      const src = freshName(taken, `${t}/float`);
      const dst = freshName(taken, `${t}/dequantized`);
      floatName.set(t, src);
      dq.set(t, dst);
      codes.set(t, t);
      report.int8Outputs.set(t, p);
      return [node('QuantizeLinear', freshName(taken, `${t}/QuantizeLinear`), [src, scale, zp], [t]), node('DequantizeLinear', freshName(taken, `${t}/DequantizeLinear`), [t, scale, zp], [dst])];
    }
    const q = freshName(taken, `${t}/quantized`);
    let src = t;
    let dst: string;
    if (outputs.has(t)) {
      src = freshName(taken, `${t}/float`);
      floatName.set(t, src);
      dst = t;
    } else {
      dst = freshName(taken, `${t}/dequantized`);
    }
    dq.set(t, dst);
    codes.set(t, q);
    return [node('QuantizeLinear', freshName(taken, `${t}/QuantizeLinear`), [src, scale, zp], [q]), node('DequantizeLinear', freshName(taken, `${t}/DequantizeLinear`), [q, scale, zp], [dst])];
  };

  const weightReplacement = new Map<GraphNode, Map<number, string>>();
  for (const n of quantNodes) {
    if (!WEIGHTED_OPS.has(n.opType)) continue;
    const wName = n.inputs[1];
    const wInit = wName ? graph.initializers.get(wName) : undefined;
    if (!wInit) continue; // Gemm/MatMul of two activations: B is quantised as an activation.
    const repl = new Map<number, string>();
    const wDims = tensorDims(wInit);
    const wValues = tensorToArray(wInit, 'float32');
    const axis = scheme.perChannel && wDims.length >= 2 ? weightAxis(n, wDims) : undefined;
    const qw = quantizeWeight(wValues, wDims, axis, scheme);
    let wData = qw.data;
    let wScale = qw.params.scale;
    const bName = n.opType !== 'MatMul' ? n.inputs[2] : undefined;
    const bInit = bName ? graph.initializers.get(bName) : undefined;
    const bDims = bInit ? tensorDims(bInit) : [];
    const inScale = params.get(n.inputs[0]!)!.scale[0]!;
    // A bias quantises only when it has one value per output channel (Conv [M], Gemm [N] or [1,N]).
    const outChannels = n.opType === 'Conv' ? wDims[0]! : attrInt(n, 'transB', 0) === 1 ? wDims[0]! : wDims[1]!;
    if (bInit && bDims.reduce((a, b) => a * b, 1) === outChannels && bDims.filter((d) => d !== 1).length <= 1) {
      const bias = tensorToArray(bInit, 'float32');
      const perOut = (ws: Float32Array) => (ws.length === outChannels ? ws : new Float32Array(outChannels).fill(ws[0]!));
      let qb = quantizeBias(bias, inScale, perOut(wScale));
      if (qb.adjustedChannels.length > 0) {
        // Tiny weight scales would overflow the int32 bias: raise them and requantise the weights
        // (per-tensor weights: one scale must cover every channel's need).
        report.biasAdjusted.push(n.name);
        wScale = wScale.length === outChannels ? qb.weightScale : Float32Array.of(Math.max(...qb.weightScale));
        wData = quantizeWeightWithScales(wValues, wDims, axis, wScale, qw.params.zeroPoint);
        qb = quantizeBias(bias, inScale, perOut(wScale));
      }
      const bq = freshName(taken, `${bName}/quantized`);
      const bs = freshName(taken, `${bName}/scale`);
      const bz = freshName(taken, `${bName}/zero_point`);
      const bOut = freshName(taken, `${bName}/dequantized`);
      const bAxis = Math.max(0, bDims.findIndex((d) => d === outChannels));
      const vec = outChannels > 1;
      newInits.push(
        arrayToTensor(bq, bDims, 'int32', qb.data),
        arrayToTensor(bs, vec ? [outChannels] : [], 'float32', qb.scale),
        arrayToTensor(bz, vec ? [outChannels] : [], 'int32', new Int32Array(outChannels)),
      );
      head.push(node('DequantizeLinear', freshName(taken, `${bName}/DequantizeLinear`), [bq, bs, bz], [bOut], vec ? bAxis : undefined));
      repl.set(2, bOut);
    }
    const wq = freshName(taken, `${wName}/quantized`);
    const ws = freshName(taken, `${wName}/scale`);
    const wz = freshName(taken, `${wName}/zero_point`);
    const wOut = freshName(taken, `${wName}/dequantized`);
    const perChannel = axis !== undefined && wScale.length > 1;
    newInits.push(
      arrayToTensor(wq, wDims, 'int8', wData),
      arrayToTensor(ws, perChannel ? [wScale.length] : [], 'float32', perChannel ? wScale : Float32Array.of(wScale[0]!)),
      arrayToTensor(wz, perChannel ? [wScale.length] : [], 'int8', new Int8Array(perChannel ? wScale.length : 1)),
    );
    head.push(node('DequantizeLinear', freshName(taken, `${wName}/DequantizeLinear`), [wq, ws, wz], [wOut], perChannel ? axis : undefined));
    repl.set(1, wOut);
    weightReplacement.set(n, repl);
  }

  // Graph inputs that quantised nodes read get their Q/DQ up front.
  for (const t of graph.inputNames) {
    const p = params.get(t);
    if (p && !outputs.has(t)) head.push(...qdqNodes(t, p));
  }
  const body: NodeProto[] = [];
  for (const n of order) {
    if (!redundant.has(n)) body.push(n.proto);
    for (const o of n.outputs) {
      const p = o && !alias.has(o) ? params.get(o) : undefined;
      if (p) body.push(...qdqNodes(o, p, direct.has(n)));
    }
  }
  // Rewire inputs: quantised nodes read dequantised tensors and weights; float readers of a
  // renamed graph output read its float original.
  for (const n of order) {
    if (redundant.has(n)) continue;
    if (direct.has(n)) {
      n.proto.input = n.proto.input.map((t, i) => (i === 0 ? codes.get(t)! : t));
      continue;
    }
    const repl = weightReplacement.get(n);
    const quantised = quantNodes.has(n);
    n.proto.input = n.proto.input.map((t, i) => {
      if (repl?.has(i)) return repl.get(i)!;
      if (!t) return t;
      if (quantised && dq.has(t)) return dq.get(t)!;
      return floatName.get(t) ?? t;
    });
    n.proto.output = n.proto.output.map((t) => {
      const u = alias.get(t) ?? t;
      return floatName.get(u) ?? u;
    });
  }
  for (const t of outputs) {
    const p = params.get(t);
    if (p && !report.int8Outputs.has(t)) report.outputParams.set(t, p);
  }
  // Inputs read as codes and outputs handed over as codes change their declared element type.
  const codeType = (p: QParams) => (p.type === 'uint8' ? DataType.UINT8 : DataType.INT8);
  for (const v of g.input) if (codesIn.has(v.name)) setElemType(v, codeType(params.get(v.name)!));
  for (const v of g.output) {
    const p = report.int8Outputs.get(v.name);
    if (p) setElemType(v, codeType(p));
  }
  report.int8Inputs = graph.inputNames.filter((t) => codesIn.has(t));
  g.node = [...head, ...body];
  g.initializer.push(...newInits);
  removeDead(g, model.source);
  return { model, report };
}
