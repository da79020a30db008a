// Mixed-precision conversion for GPU targets (Jetson): float32 weights and activations become
// float16, which halves bundle bytes and lets CUDA/TensorRT use half-precision kernels. Ops whose
// float16 form is missing from the ONNX schema, or known to lose accuracy, stay float32 with Cast
// nodes at the boundaries, so the result is always a valid model that onnxruntime loads.
//
// Facts this pass is built on:
//  - onnxruntime's x86 CPU EP (1.30) has float16 kernels only for data-movement ops (Reshape,
//    Flatten, Concat, Transpose, Gather, Slice, Clip, Min/Max, Expand, LayerNormalization); for
//    Conv, Gemm, MatMul, Relu, Add, MaxPool, BatchNormalization, Softmax, ... it inserts Casts to
//    float32 by itself when the session is created. So a converted model runs on CPU (tests, a
//    laptop) with float16 storage between nodes, and natively in half precision on CUDA.
//  - onnxconverter-common's converter clips constants into a finite range, leaves 0/NaN/±Inf
//    alone, keeps Resize/Upsample/Range/TopK/NonMaxSuppression/... in float32 and can keep graph
//    inputs/outputs float32. We follow the same ideas with our own rules: each op's fp16 policy in
//    src/onnx/ops (collected in DEFAULT_BLOCK_OPS).
//
// Only the main graph is converted; nodes carrying subgraphs (If/Loop/Scan) stay float32.
import { clone, create } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType as AttrType,
  ModelProtoSchema,
  NodeProtoSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type AttributeProto,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../onnx/gen/onnx_pb.js';
import { DataType, OPS, OnnxGraph, OnnxModel, arrayToTensor, fp16KeepReasons, inferShapes, tensorDims, tensorToArray, numberToFloat16Bits } from '../onnx/index.js';
import { freshName } from './graph-edit.js';

const F32 = DataType.FLOAT;
const F16 = DataType.FLOAT16;

/** Largest finite float16. */
export const FP16_MAX = 65504;
/** Smallest positive float16 (a subnormal, 2^-24). */
export const FP16_MIN_POSITIVE = 2 ** -24;

/**
 * Ops kept float32 unless the caller passes its own list, with the reason each one is there (the
 * fp16 policy of each op's entry in src/onnx/ops). Everything else in the default ONNX domain is
 * converted; ops of other domains always stay.
 */
export const DEFAULT_BLOCK_OPS: Readonly<Record<string, string>> = fp16KeepReasons();

/** Inputs that must stay float32 even when the node is converted (Resize's scales). */
function float32Inputs(opType: string): readonly number[] {
  return OPS.get(opType)?.fp16.float32Inputs ?? [];
}

export interface Fp16Options {
  /** Keep graph inputs and outputs float32, with Casts inside the graph (default true). */
  keepIoFloat32?: boolean;
  /** Op types to keep float32 (default: the keys of DEFAULT_BLOCK_OPS). Replaces the default list. */
  blockOps?: readonly string[];
  /** Node names to keep float32. */
  blockNodes?: readonly string[];
}

export interface Fp16Report {
  /** Nodes (Constants included) that now compute or hold float16. */
  converted: number;
  keptFloat32: { node: string; op: string; reason: string }[];
  /** Constant tensors with values moved into float16's range, and how many values moved. */
  clamped: { tensor: string; count: number }[];
  castsInserted: number;
}

export interface Fp16Result {
  model: OnnxModel;
  report: Fp16Report;
}

/**
 * Float32 values → float16 bits. Finite magnitudes above 65504 clamp to ±65504 (they would
 * become ±Inf); non-zero magnitudes below 2^-24 clamp up to ±2^-24 rather than flush to zero, so
 * that an epsilon or a tiny divisor stays non-zero. 0, NaN and ±Inf are kept: they are
 * representable and usually intended (masks).
 */
export function clampToFloat16(values: ArrayLike<number>): { bits: Uint16Array; clamped: number } {
  const bits = new Uint16Array(values.length);
  let clamped = 0;
  for (let i = 0; i < values.length; i++) {
    let v = values[i]!;
    const a = Math.abs(v);
    if (Number.isFinite(v) && a > FP16_MAX) {
      v = Math.sign(v) * FP16_MAX;
      clamped++;
    } else if (a > 0 && a < FP16_MIN_POSITIVE) {
      v = Math.sign(v) * FP16_MIN_POSITIVE;
      clamped++;
    }
    bits[i] = numberToFloat16Bits(v);
  }
  return { bits, clamped };
}

/** A float32 TensorProto as float16 (same name unless `name` is given), with the clamp count. */
function tensorToFp16(t: TensorProto, name = t.name): { tensor: TensorProto; clamped: number } {
  const { bits, clamped } = clampToFloat16(tensorToArray(t, 'float32'));
  const out = arrayToTensor(name, tensorDims(t), 'float16', bits);
  out.docString = t.docString;
  return { tensor: out, clamped };
}

function elemTypeOf(v: ValueInfoProto): number {
  return v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : 0;
}

function setElemType(v: ValueInfoProto, elemType: number): void {
  if (v.type?.value.case === 'tensorType') v.type.value.value.elemType = elemType;
}

/** A value_info for `name` with `like`'s shape (if any) and the given element type. */
function typedLike(name: string, elemType: number, like?: ValueInfoProto): ValueInfoProto {
  const tt = create(TypeProto_TensorSchema, { elemType });
  if (like?.type?.value.case === 'tensorType' && like.type.value.value.shape) tt.shape = clone(TypeProto_TensorSchema, like.type.value.value).shape;
  return create(ValueInfoProtoSchema, { name, type: create(TypeProtoSchema, { value: { case: 'tensorType', value: tt } }) });
}

function castNode(name: string, input: string, output: string, to: number): NodeProto {
  return create(NodeProtoSchema, {
    name,
    opType: 'Cast',
    input: [input],
    output: [output],
    attribute: [create(AttributeProtoSchema, { name: 'to', type: AttrType.INT, i: BigInt(to) })],
  });
}

/** The tensor a Constant node holds, float attributes turned into a tensor; undefined for other kinds. */
function constantValue(n: NodeProto): TensorProto | undefined {
  for (const a of n.attribute) {
    if (a.name === 'value' && a.t) return a.t;
    if (a.name === 'value_float') return arrayToTensor(n.output[0] ?? '', [], 'float32', Float32Array.of(a.f));
    if (a.name === 'value_floats') return arrayToTensor(n.output[0] ?? '', [a.floats.length], 'float32', Float32Array.from(a.floats));
  }
  return undefined;
}

function tensorAttr(name: string, t: TensorProto): AttributeProto {
  return create(AttributeProtoSchema, { name, type: AttrType.TENSOR, t });
}

/** Element type of every tensor of the main graph: declarations first, inference for the rest. */
function tensorTypes(model: OnnxModel, graph: OnnxGraph): Map<string, number> {
  const types = new Map<string, number>();
  for (const [name, info] of inferShapes(graph).tensors) if (info.dtype) types.set(name, info.dtype);
  const g = model.graph;
  for (const v of [...g.valueInfo, ...g.input, ...g.output]) {
    const t = elemTypeOf(v);
    if (t) types.set(v.name, t);
  }
  for (const t of g.initializer) types.set(t.name, t.dataType);
  for (const n of g.node) {
    if (n.opType !== 'Constant' || n.domain) continue;
    const v = constantValue(n);
    if (v && n.output[0]) types.set(n.output[0], v.dataType);
  }
  return types;
}

/**
 * Convert a float32 model to float16 (see the header for what stays float32). The input model is
 * not modified. Graph IO stays float32 by default, so callers feed and read float32 as before.
 */
export function convertToFp16(model: OnnxModel, opts: Fp16Options = {}): Fp16Result {
  const keepIo = opts.keepIoFloat32 ?? true;
  const blockOps = new Set(opts.blockOps ?? Object.keys(DEFAULT_BLOCK_OPS));
  const blockNodes = new Set(opts.blockNodes ?? []);
  const proto = clone(ModelProtoSchema, model.proto);
  const out = new OnnxModel(proto, model.source, model.baseDir, model.externalTensors);
  const g: GraphProto = out.graph;
  const graph = new OnnxGraph(g, model.source);
  const types = tensorTypes(out, graph);
  const isF32 = (t: string) => !!t && types.get(t) === F32;
  const report: Fp16Report = { converted: 0, keptFloat32: [], clamped: [], castsInserted: 0 };

  // Tensors read from inside a subgraph cannot get a Cast in front of their reader without editing
  // the subgraph, so they keep their float32 type: their producers stay float32.
  const readBySubgraph = new Set(graph.nodes.flatMap((n) => n.implicitInputs));
  const graphOutputs = new Set(graph.outputNames);

  // 1. Which nodes compute in float16. Constant nodes are decided later, by their readers.
  const converted = new Set<number>();
  const constantNodes = new Map<string, number>(); // output → node index
  for (const n of graph.nodes) {
    const castsToFloat = n.opType === 'Cast' && !n.domain && Number(n.proto.attribute.find((a) => a.name === 'to')?.i ?? 0) === F32;
    const touchesFloat = n.inputs.some(isF32) || n.outputs.some(isF32) || castsToFloat;
    if (!touchesFloat) continue;
    if (n.opType === 'Constant' && !n.domain) {
      if (n.outputs[0]) constantNodes.set(n.outputs[0], n.index);
      continue;
    }
    let reason: string | undefined;
    if (n.domain && n.domain !== 'ai.onnx') reason = `op of domain '${n.domain}' (its float16 support is unknown)`;
    else if (blockNodes.has(n.name) || blockNodes.has(n.proto.name)) reason = 'node in blockNodes';
    else if (blockOps.has(n.opType)) reason = DEFAULT_BLOCK_OPS[n.opType] ?? 'op in blockOps';
    else if (n.proto.attribute.some((a) => a.g || a.graphs.length > 0)) reason = 'has subgraphs (only the main graph is converted)';
    else if (n.outputs.some((o) => readBySubgraph.has(o) && isF32(o))) reason = 'an output is read inside a subgraph';
    if (reason) report.keptFloat32.push({ node: n.name, op: n.opType, reason });
    else converted.add(n.index);
  }

  // 2. What element type each reader wants for each float32 tensor.
  const wants = new Map<string, Set<number>>();
  const want = (t: string, dtype: number) => {
    let s = wants.get(t);
    if (!s) wants.set(t, (s = new Set()));
    s.add(dtype);
  };
  const slotType = (n: { index: number; opType: string }, slot: number): number =>
    converted.has(n.index) && !float32Inputs(n.opType).includes(slot) ? F16 : F32;
  for (const n of graph.nodes) {
    n.inputs.forEach((t, slot) => {
      if (isF32(t)) want(t, slotType(n, slot));
    });
    for (const t of n.implicitInputs) if (isF32(t)) want(t, F32);
  }
  for (const t of graphOutputs) if (isF32(t)) want(t, keepIo ? F32 : F16);

  // 3. Where each float32 tensor lives after conversion ("home" type), and float16 constants.
  const home = new Map<string, number>();
  const initializers = new Map(g.initializer.map((t, i) => [t.name, i]));
  const taken = graph.tensorNames();
  for (const n of g.node) if (n.name) taken.add(n.name);
  /** Constant tensor → its float16 twin's name, when readers want both types. */
  const fp16Twin = new Map<string, string>();
  const newInitializers: TensorProto[] = [];
  const twinConstants = new Map<number, NodeProto[]>(); // Constant node index → twins to emit after it
  const noteClamp = (tensor: string, count: number) => {
    if (count > 0) report.clamped.push({ tensor, count });
  };

  for (const v of graph.inputs) if (isF32(v.name)) home.set(v.name, keepIo ? F32 : F16);
  for (const [name, i] of initializers) {
    if (!isF32(name)) continue;
    const w = wants.get(name);
    if (!w?.has(F16) || graphOutputs.has(name) || readBySubgraph.has(name)) {
      home.set(name, F32);
      if (w?.has(F16)) {
        const twin = freshName(taken, `${name}_fp16`);
        const { tensor, clamped } = tensorToFp16(g.initializer[i]!, twin);
        newInitializers.push(tensor);
        fp16Twin.set(name, twin);
        noteClamp(name, clamped);
      }
    } else if (w.has(F32)) {
      // Shared by float32 and float16 readers: keep the original, add a float16 copy.
      home.set(name, F32);
      const twin = freshName(taken, `${name}_fp16`);
      const { tensor, clamped } = tensorToFp16(g.initializer[i]!, twin);
      newInitializers.push(tensor);
      fp16Twin.set(name, twin);
      noteClamp(name, clamped);
    } else {
      home.set(name, F16);
      const { tensor, clamped } = tensorToFp16(g.initializer[i]!);
      g.initializer[i] = tensor;
      noteClamp(name, clamped);
    }
  }
  for (const [name, idx] of constantNodes) {
    const node = g.node[idx]!;
    const value = constantValue(node);
    const w = wants.get(name);
    if (!value || value.dataType !== F32 || !w?.has(F16)) {
      home.set(name, types.get(name) ?? F32);
      if (value?.dataType === F32) report.keptFloat32.push({ node: graph.nodes[idx]!.name, op: 'Constant', reason: 'read only by float32 nodes' });
      continue;
    }
    const onlyFp16 = !w.has(F32) && !graphOutputs.has(name) && !readBySubgraph.has(name);
    const fp16Name = onlyFp16 ? name : freshName(taken, `${name}_fp16`);
    const { tensor, clamped } = tensorToFp16(value, fp16Name);
    noteClamp(name, clamped);
    report.converted++;
    if (onlyFp16) {
      home.set(name, F16);
      node.attribute = [tensorAttr('value', tensor)];
    } else {
      home.set(name, F32);
      fp16Twin.set(name, fp16Name);
      const twinName = freshName(taken, `${node.name || name}_fp16`);
      twinConstants.set(idx, [create(NodeProtoSchema, { name: twinName, opType: 'Constant', output: [fp16Name], attribute: [tensorAttr('value', tensor)] })]);
    }
  }
  for (const n of graph.nodes) {
    if (n.opType === 'Constant' && !n.domain) continue;
    const conv = converted.has(n.index);
    for (const o of n.outputs) if (isF32(o)) home.set(o, conv ? F16 : F32);
    if (!conv) continue;
    report.converted++;
    // Attributes that choose an output type.
    if (n.opType === 'Cast') {
      const to = n.proto.attribute.find((a) => a.name === 'to');
      if (to && Number(to.i) === F32) {
        to.i = BigInt(F16);
        if (n.outputs[0]) home.set(n.outputs[0], F16);
      }
    } else if (n.opType === 'ConstantOfShape') {
      const value = n.proto.attribute.find((a) => a.name === 'value');
      if (value?.t && value.t.dataType === F32) {
        const { tensor, clamped } = tensorToFp16(value.t);
        value.t = tensor;
        noteClamp(n.outputs[0] ?? n.name, clamped);
      } else if (!value) {
        // Without `value` the output is float32 zeros.
        n.proto.attribute.push(tensorAttr('value', arrayToTensor('value', [1], 'float16', Uint16Array.of(0))));
      }
      if (n.outputs[0]) home.set(n.outputs[0], F16);
    }
  }

  // 4. Rewire readers whose wanted type differs from the tensor's home: constants read their
  //    float16 twin, everything else a Cast shared by all readers of the same tensor and type.
  const valueInfo = new Map(g.valueInfo.map((v) => [v.name, v]));
  const declared = (t: string) => valueInfo.get(t) ?? g.input.find((v) => v.name === t) ?? g.output.find((v) => v.name === t);
  const casts = new Map<string, string>(); // `${tensor}\0${to}` → cast output
  const newValueInfo: ValueInfoProto[] = [];
  const castFor = (t: string, to: number, emit: NodeProto[]): string => {
    const key = `${t}\0${to}`;
    let name = casts.get(key);
    if (!name) {
      name = freshName(taken, `${t}_${to === F16 ? 'fp16' : 'fp32'}`);
      casts.set(key, name);
      emit.push(castNode(freshName(taken, `Cast_${name}`), t, name, to));
      newValueInfo.push(typedLike(name, to, declared(t)));
      report.castsInserted++;
    }
    return name;
  };
  const nodes: NodeProto[] = [];
  graph.nodes.forEach((n) => {
    const p = n.proto;
    p.input = p.input.map((t, slot) => {
      if (!isF32(t)) return t;
      const w = slotType(n, slot);
      if (home.get(t) === w) return t;
      const twin = fp16Twin.get(t);
      if (twin && w === F16) return twin;
      return castFor(t, w, nodes);
    });
    nodes.push(p, ...(twinConstants.get(n.index) ?? []));
  });

  // 5. Graph outputs: the producer writes a renamed tensor and a Cast restores the declared name
  //    and type, so the model's interface keeps its names.
  for (const o of g.output) {
    if (!isF32(o.name)) continue;
    const w = keepIo ? F32 : F16;
    const h = home.get(o.name) ?? F32;
    setElemType(o, w);
    if (h === w) continue;
    const producer = nodes.find((p) => p.output.includes(o.name));
    if (!producer) {
      setElemType(o, h); // a graph input or initializer passed straight through keeps its type
      continue;
    }
    const inner = freshName(taken, `${o.name}_${h === F16 ? 'fp16' : 'fp32'}`);
    for (const p of nodes) {
      p.input = p.input.map((t) => (t === o.name ? inner : t));
      p.output = p.output.map((t) => (t === o.name ? inner : t));
    }
    home.set(inner, h);
    const vi = valueInfo.get(o.name);
    if (vi) vi.name = inner;
    else newValueInfo.push(typedLike(inner, h, o));
    nodes.push(castNode(freshName(taken, `Cast_${o.name}`), inner, o.name, w));
    report.castsInserted++;
  }

  // 6. Declared types follow the new homes.
  for (const v of g.valueInfo) {
    const h = home.get(v.name);
    if (h !== undefined && elemTypeOf(v) === F32) setElemType(v, h);
  }
  for (const v of g.input) {
    const h = home.get(v.name);
    if (h !== undefined && elemTypeOf(v) === F32) setElemType(v, h);
  }
  g.node = nodes;
  g.initializer.push(...newInitializers);
  g.valueInfo.push(...newValueInfo);
  return { model: out, report };
}
