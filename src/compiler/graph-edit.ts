// Small in-place edits on a GraphProto that the compiler passes share: renaming a tensor, taking
// a pass-through node out, dropping dead nodes and unused weights. They work on the proto and
// leave indexing to the caller (build a fresh OnnxGraph after each pass: OnnxGraph is a snapshot).
import { OnnxGraph } from '../onnx/index.js';
import type { GraphProto } from '../onnx/index.js';

/**
 * Rename tensor `from` to `to` wherever the main graph mentions it: node inputs and outputs,
 * value_info, graph inputs and outputs. Callers must make sure no subgraph (If/Loop body) reads
 * `from` from the outer scope; `canRename` says whether that holds.
 */
export function renameTensor(g: GraphProto, from: string, to: string): void {
  for (const n of g.node) {
    n.input = n.input.map((i) => (i === from ? to : i));
    n.output = n.output.map((o) => (o === from ? to : o));
  }
  for (const v of [...g.valueInfo, ...g.input, ...g.output]) if (v.name === from) v.name = to;
  for (const q of g.quantizationAnnotation) if (q.tensorName === from) q.tensorName = to;
}

/** A tensor read from inside a subgraph cannot be renamed by editing the main graph alone. */
export function canRename(graph: OnnxGraph, tensor: string): boolean {
  return !graph.consumers(tensor).some((c) => c.implicitInputs.includes(tensor));
}

/** A name not yet used in the graph, derived from `base`. */
export function freshName(taken: Set<string>, base: string): string {
  let name = base;
  for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
  taken.add(name);
  return name;
}

export type BypassResult = { removed: true } | { removed: false; reason: string };

/**
 * Take out a node that passes its first input through unchanged (Identity, inference Dropout):
 * its readers read the input instead. When the node's output is a graph output, the output name
 * must survive, so the input's producer is renamed to produce it instead.
 */
export function bypassNode(g: GraphProto, graph: OnnxGraph, nodeIndex: number): BypassResult {
  const node = graph.nodes[nodeIndex]!;
  const input = node.inputs[0];
  const output = node.outputs[0];
  if (!input || !output) return { removed: false, reason: 'it has no input or no output' };
  if (!canRename(graph, output) || !canRename(graph, input)) return { removed: false, reason: 'a subgraph reads its tensors' };
  const isGraphOutput = (t: string) => graph.outputNames.includes(t);
  if (isGraphOutput(output)) {
    if (graph.isGraphInput(input) || graph.isInitializer(input) || isGraphOutput(input) || !graph.producer(input)) {
      return { removed: false, reason: `its output '${output}' is a graph output fed straight from '${input}', which has no producer node to rename` };
    }
    g.node.splice(nodeIndex, 1);
    // The old output's value_info (if any) now describes the same tensor twice; keep the output's.
    g.valueInfo = g.valueInfo.filter((v) => v.name !== input);
    renameTensor(g, input, output);
    return { removed: true };
  }
  g.node.splice(nodeIndex, 1);
  for (const n of g.node) n.input = n.input.map((i) => (i === output ? input : i));
  g.valueInfo = g.valueInfo.filter((v) => v.name !== output);
  return { removed: true };
}

/**
 * Drop nodes no graph output needs, initializers no node reads, and value_info of tensors that
 * no longer exist. Returns how many nodes and initializers went.
 */
export function removeDead(g: GraphProto, source: string): { nodes: number; initializers: number } {
  let graph = new OnnxGraph(g, source);
  const keep = new Set(graph.requiredNodes(graph.outputNames).map((n) => n.index));
  const before = g.node.length;
  g.node = g.node.filter((_, i) => keep.has(i));
  graph = new OnnxGraph(g, source);
  const read = new Set<string>(graph.outputNames);
  for (const n of graph.nodes) for (const i of [...n.inputs, ...n.implicitInputs]) if (i) read.add(i);
  const initsBefore = g.initializer.length + g.sparseInitializer.length;
  const dropped = new Set(g.initializer.filter((t) => !read.has(t.name)).map((t) => t.name));
  g.initializer = g.initializer.filter((t) => read.has(t.name));
  g.sparseInitializer = g.sparseInitializer.filter((s) => !s.values || read.has(s.values.name));
  // Old exporters also list weights as graph inputs; an input that only named a dropped weight goes too.
  g.input = g.input.filter((v) => !dropped.has(v.name));
  const names = graph.tensorNames();
  g.valueInfo = g.valueInfo.filter((v) => names.has(v.name));
  return { nodes: before - g.node.length, initializers: initsBefore - g.initializer.length - g.sparseInitializer.length };
}
