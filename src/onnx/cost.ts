// Compute cost of a model and of each of its exits, from static shapes at batch 1. The compiler
// uses the incremental cost of each exit (what a stage adds on top of the earlier exits) to
// decide where early exits pay off, so MACs are counted the way papers count them (each op's
// rule is in its entry of src/onnx/ops); bias adds, activations and pooling are reported
// separately as elementwise work.
import { DataType } from './dtype.js';
import { OnnxGraph, attrTensor, type GraphNode } from './graph.js';
import type { OnnxModel } from './model.js';
import { inferShapes, type ShapeOptions, type ShapeResult } from './shapes.js';
import { elementCount, tensorDims } from './tensor.js';
import { opSpec, type MacRule } from './ops/index.js';
import { ELEMENTWISE } from './ops/spec.js';

export interface NodeCost {
  index: number;
  node: string;
  opType: string;
  /** Multiply-accumulates (Conv, ConvTranspose, Gemm, MatMul and their quantised forms). */
  macs: number;
  /** Output elements of other computing ops (activations, adds, normalisation, pooling); 0 for pure data movement. */
  elementwise: number;
  /** Elements of the constant weights the node reads (a weight shared by two nodes counts at both). */
  params: number;
  outputShape?: number[];
}

export interface ModelCost {
  macs: number;
  elementwise: number;
  /** Elements of distinct constant weights (see parameterCount). */
  params: number;
  nodes: NodeCost[];
  histogram: Map<string, number>;
  /** Nodes whose cost could not be computed because their shapes are unknown. */
  unresolved: { node: string; opType: string; reason: string }[];
}

export interface OutputCost {
  output: string;
  /** Everything the output depends on. */
  cumulativeMacs: number;
  /** Only nodes that no earlier graph output needs: the cost of this exit's stage. */
  incrementalMacs: number;
  cumulativeElementwise: number;
  incrementalElementwise: number;
  cumulativeParams: number;
  incrementalParams: number;
  nodes: number;
  incrementalNodes: number;
}

/** Integer shape/index tensors are never weights; quantised weights (int8, uint8, 4-bit) are. */
const NON_PARAM_TYPES = new Set<number>([DataType.INT64, DataType.INT32, DataType.BOOL, DataType.STRING, DataType.UNDEFINED]);

interface Costing {
  graph: OnnxGraph;
  shapes: ShapeResult;
  nodes: NodeCost[];
  /** Per node: the constant weights (name → elements) it reads. */
  weights: Map<string, number>[];
}

function constantElements(graph: OnnxGraph, name: string): { dtype: number; count: number } | undefined {
  const init = graph.initializers.get(name);
  if (init) return { dtype: init.dataType, count: elementCount(tensorDims(init)) };
  const sparse = graph.sparseInitializers.get(name);
  if (sparse?.values) return { dtype: sparse.values.dataType, count: elementCount(tensorDims(sparse.values)) };
  const p = graph.producer(name);
  if (p && p.opType === 'Constant' && p.domain === '') {
    const t = attrTensor(p, 'value');
    if (t) return { dtype: t.dataType, count: elementCount(tensorDims(t)) };
  }
  return undefined;
}

function nodeWeights(graph: OnnxGraph, node: GraphNode): Map<string, number> {
  const out = new Map<string, number>();
  const skip = opSpec(node.domain, node.opType)?.cost.shapeInputs ?? [];
  node.inputs.forEach((name, i) => {
    if (!name || skip.includes(i)) return;
    const c = constantElements(graph, name);
    if (c && !NON_PARAM_TYPES.has(c.dtype)) out.set(name, c.count);
  });
  return out;
}

/** The node's MACs; when its shapes are unknown, 0 and the node is listed as unresolved. */
function macsOf(node: GraphNode, rule: MacRule, shapes: ShapeResult): number {
  const shape = (name: string | undefined) => (name ? shapes.tensors.get(name)?.shape : undefined);
  const m = rule(node, (i) => shape(node.inputs[i]), shape(node.outputs[0]));
  if (typeof m === 'number') return m;
  if (!shapes.unresolved.some((u) => u.node === node.name)) shapes.unresolved.push({ node: node.name, opType: node.opType, reason: m });
  return 0;
}

function compute(model: OnnxModel, opts: ShapeOptions): Costing {
  const graph = OnnxGraph.of(model);
  const shapes = inferShapes(graph, opts);
  const nodes: NodeCost[] = [];
  const weights: Map<string, number>[] = [];
  for (const node of graph.nodes) {
    const outShape = node.outputs[0] ? shapes.tensors.get(node.outputs[0])?.shape : undefined;
    const w = nodeWeights(graph, node);
    weights[node.index] = w;
    // Ops missing from the table (and ops of other domains) count as elementwise work.
    const rule = opSpec(node.domain, node.opType)?.cost ?? ELEMENTWISE;
    const cost: NodeCost = {
      index: node.index,
      node: node.name,
      opType: node.opType,
      macs: rule.macs ? macsOf(node, rule.macs, shapes) : 0,
      elementwise: rule.work === 'elementwise' && outShape ? elementCount(outShape) : 0,
      params: [...w.values()].reduce((a, b) => a + b, 0),
    };
    if (outShape) cost.outputShape = outShape;
    nodes.push(cost);
  }
  return { graph, shapes, nodes, weights };
}

function sumWeights(c: Costing, nodes: Iterable<GraphNode>): Map<string, number> {
  const all = new Map<string, number>();
  for (const n of nodes) for (const [k, v] of c.weights[n.index]!) all.set(k, v);
  return all;
}

/** Per-node cost, in graph order. */
export function nodeCosts(model: OnnxModel, opts: ShapeOptions = {}): NodeCost[] {
  return compute(model, opts).nodes;
}

/** Totals, per-node costs and the op histogram of the main graph. */
export function modelCost(model: OnnxModel, opts: ShapeOptions = {}): ModelCost {
  const c = compute(model, opts);
  return {
    macs: c.nodes.reduce((a, n) => a + n.macs, 0),
    elementwise: c.nodes.reduce((a, n) => a + n.elementwise, 0),
    params: [...sumWeights(c, c.graph.nodes).values()].reduce((a, b) => a + b, 0),
    nodes: c.nodes,
    histogram: c.graph.opHistogram(),
    unresolved: c.shapes.unresolved,
  };
}

/**
 * Parameter count: elements of the distinct constant tensors (initializers, Constant nodes) that
 * nodes read as data. Shape vectors, axes and indices (int64/int32 inputs or shape slots such as
 * Reshape's second input) are not parameters; BatchNormalization statistics are.
 */
export function parameterCount(model: OnnxModel): number {
  return modelCost(model).params;
}

/** Node count per op type, most frequent first (`domain::Op` outside the default domain). */
export function opHistogram(model: OnnxModel): Map<string, number> {
  return OnnxGraph.of(model).opHistogram();
}

/**
 * For each graph output, in graph output order: the cost of everything it depends on, and the
 * incremental cost of the nodes that no earlier output needs (an exit's own stage).
 */
export function costPerOutput(model: OnnxModel, opts: ShapeOptions = {}): OutputCost[] {
  const c = compute(model, opts);
  const seen = new Set<GraphNode>();
  const seenWeights = new Set<string>();
  const sum = (nodes: GraphNode[], key: 'macs' | 'elementwise') => nodes.reduce((a, n) => a + c.nodes[n.index]![key], 0);
  return c.graph.outputNames.map((output) => {
    const needed = c.graph.requiredNodes([output]);
    const fresh = needed.filter((n) => !seen.has(n));
    const weights = sumWeights(c, needed);
    let incrementalParams = 0;
    for (const [k, v] of weights) if (!seenWeights.has(k)) incrementalParams += v;
    for (const n of needed) seen.add(n);
    for (const k of weights.keys()) seenWeights.add(k);
    return {
      output,
      cumulativeMacs: sum(needed, 'macs'),
      incrementalMacs: sum(fresh, 'macs'),
      cumulativeElementwise: sum(needed, 'elementwise'),
      incrementalElementwise: sum(fresh, 'elementwise'),
      cumulativeParams: [...weights.values()].reduce((a, b) => a + b, 0),
      incrementalParams,
      nodes: needed.length,
      incrementalNodes: fresh.length,
    };
  });
}
