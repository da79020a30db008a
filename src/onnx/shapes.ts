// Static shape inference for the CNN ops torch.onnx.export emits, at a fixed batch size (dynamic
// dimensions become `dynamicDim`, 1 by default). Cost estimates and stage extraction need every
// tensor's shape without running the model. Small integer tensors (shape vectors) are also
// evaluated, because torch builds Reshape targets from Shape → Gather → Unsqueeze → Concat chains.
// Ops we do not know leave their outputs unknown and are listed in `unresolved`, never thrown.
import type { ValueInfoProto } from './gen/onnx_pb.js';
import { OnnxGraph, type GraphNode } from './graph.js';
import type { OnnxModel } from './model.js';
import { elementCount, tensorDims } from './tensor.js';
import { broadcastShapes, constantValues } from './ops/common.js';
import { ShapeError, opSpec, type ShapeCtx, type TensorShapeInfo } from './ops/index.js';

export { broadcastShapes, type TensorShapeInfo };

export interface ShapeOptions {
  /** Value for dimensions the model leaves symbolic (batch, sequence length). Default 1. */
  dynamicDim?: number;
  /** Override the shapes of graph inputs. */
  inputShapes?: Readonly<Record<string, readonly number[]>>;
}

export interface ShapeResult {
  /** Graph inputs, initializers and every node output whose shape is known. */
  tensors: Map<string, TensorShapeInfo>;
  /** Values of small numeric tensors known without running the model (flattened, as numbers). */
  constants: Map<string, number[]>;
  /** Nodes whose outputs could not be inferred, with the reason. */
  unresolved: { node: string; opType: string; reason: string }[];
}

/** Dims of a value from its ValueInfoProto, symbolic dims replaced; undefined for non-tensors or unknown rank. */
export function valueInfoShape(v: ValueInfoProto, dynamicDim = 1): TensorShapeInfo | undefined {
  const tt = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  if (!tt) return undefined;
  if (!tt.shape) return { dtype: tt.elemType };
  const shape = tt.shape.dim.map((d) => {
    if (d.value.case === 'dimValue' && d.value.value >= 0n) return Number(d.value.value);
    return dynamicDim;
  });
  return { dtype: tt.elemType, shape };
}

/** Apply the op's shape rule; ops without one leave their outputs unknown. */
function inferNode(ctx: ShapeCtx): void {
  const { node } = ctx;
  const rule = opSpec(node.domain, node.opType)?.shape;
  if (!rule) throw new ShapeError(`no shape rule for ${node.domain === '' ? node.opType : `${node.domain}::${node.opType}`}`);
  rule(ctx);
}

/** What is known before any node runs: graph inputs, initializers (with small values) and sparse initializers. */
function seed(graph: OnnxGraph, opts: ShapeOptions): Pick<ShapeResult, 'tensors' | 'constants'> {
  const dyn = opts.dynamicDim ?? 1;
  const tensors = new Map<string, TensorShapeInfo>();
  const constants = new Map<string, number[]>();
  for (const v of graph.inputs) {
    const override = opts.inputShapes?.[v.name];
    const info = valueInfoShape(v, dyn);
    if (override) tensors.set(v.name, { dtype: info?.dtype ?? 0, shape: [...override] });
    else if (info) tensors.set(v.name, info);
  }
  for (const [name, t] of graph.initializers) {
    tensors.set(name, { dtype: t.dataType, shape: tensorDims(t) });
    const v = constantValues(t);
    if (v) constants.set(name, v);
  }
  for (const [name, s] of graph.sparseInitializers) {
    tensors.set(name, { dtype: s.values?.dataType ?? 0, shape: s.dims.map(Number) });
  }
  return { tensors, constants };
}

/** The view a shape rule gets of one node: its inputs read from, its outputs written to, `known`. */
function nodeCtx(node: GraphNode, known: Pick<ShapeResult, 'tensors' | 'constants'>): ShapeCtx {
  const { tensors, constants } = known;
  const info = (i: number) => {
    const name = node.inputs[i];
    return name ? tensors.get(name) : undefined;
  };
  return {
    node,
    info,
    has: (i) => !!node.inputs[i],
    shape(i) {
      const s = info(i)?.shape;
      if (!s) throw new ShapeError(node.inputs[i] ? `input '${node.inputs[i]}' has an unknown shape` : `input ${i} is missing`);
      return s;
    },
    dtype: (i) => info(i)?.dtype ?? 0,
    value: (i) => (node.inputs[i] ? constants.get(node.inputs[i]!) : undefined),
    requireValue(i, what) {
      const v = node.inputs[i] ? constants.get(node.inputs[i]!) : undefined;
      if (!v) throw new ShapeError(`${what} (input ${i}${node.inputs[i] ? ` '${node.inputs[i]}'` : ''}) is not a constant`);
      return v;
    },
    set(i, dtype, shape, values) {
      const name = node.outputs[i];
      if (!name) return;
      tensors.set(name, { dtype, shape });
      if (values && values.length === elementCount(shape)) constants.set(name, values);
    },
  };
}

/** Infer the dtype and shape of every tensor in the model's main graph. */
export function inferShapes(model: OnnxModel | OnnxGraph, opts: ShapeOptions = {}): ShapeResult {
  const graph = model instanceof OnnxGraph ? model : OnnxGraph.of(model);
  const known = seed(graph, opts);
  const unresolved: ShapeResult['unresolved'] = [];
  for (const node of graph.topologicalOrder()) {
    const ctx = nodeCtx(node, known);
    try {
      inferNode(ctx);
    } catch (err) {
      if (!(err instanceof ShapeError)) throw err;
      unresolved.push({ node: node.name, opType: node.opType, reason: err.message });
      // Keep the element type where it is obvious, so extracted stages still get typed inputs.
      for (const o of node.outputs) if (o && !known.tensors.has(o)) known.tensors.set(o, { dtype: ctx.dtype(0) });
    }
  }
  return { ...known, unresolved };
}

/** True when the tensor has a type but no shape, e.g. after an op the inference does not know. */
export function hasShape(r: ShapeResult, name: string): boolean {
  return r.tensors.get(name)?.shape !== undefined;
}
