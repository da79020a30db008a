// A read-only index over a GraphProto: who produces and who consumes each tensor, which inputs
// are real inputs rather than initializers, a stable topological order and the set of nodes an
// output needs. Splitting a model into early-exit stages and costing them is built on this.
// It is a snapshot: after editing the proto, build a new OnnxGraph.
import { OnnxFormatError } from '../util/errors.js';
import {
  AttributeProto_AttributeType as AttrType,
  type AttributeProto,
  type GraphProto,
  type NodeProto,
  type SparseTensorProto,
  type TensorProto,
  type ValueInfoProto,
} from './gen/onnx_pb.js';
import type { OnnxModel } from './model.js';

export interface GraphNode {
  /** Position in graph.node. */
  readonly index: number;
  /** The node's name, or `OpType#index` when the file leaves it empty. */
  readonly name: string;
  readonly opType: string;
  /** '' for the default ONNX domain. */
  readonly domain: string;
  /** As in the file: '' marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** Outer-scope tensors that the node's subgraphs (If/Loop/Scan bodies) read. */
  readonly implicitInputs: readonly string[];
  readonly proto: NodeProto;
}

function nodeLabel(n: GraphNode): string {
  return `'${n.name}' (${n.opType})`;
}

/** Names a subgraph reads from the scopes around it. */
function outerScopeNames(g: GraphProto): string[] {
  const defined = new Set<string>();
  for (const v of g.input) defined.add(v.name);
  for (const t of g.initializer) defined.add(t.name);
  for (const s of g.sparseInitializer) if (s.values) defined.add(s.values.name);
  for (const n of g.node) for (const o of n.output) if (o) defined.add(o);
  const used = new Set<string>();
  for (const n of g.node) {
    for (const i of n.input) if (i && !defined.has(i)) used.add(i);
    for (const i of subgraphReads(n)) if (!defined.has(i)) used.add(i);
  }
  for (const o of g.output) if (!defined.has(o.name)) used.add(o.name);
  return [...used];
}

function subgraphReads(n: NodeProto): string[] {
  const out: string[] = [];
  for (const a of n.attribute) {
    if (a.g) out.push(...outerScopeNames(a.g));
    for (const g of a.graphs) out.push(...outerScopeNames(g));
  }
  return out;
}

/** A binary min-heap of node indices, for the stable topological sort. */
class MinHeap {
  private a: number[] = [];
  get size(): number {
    return this.a.length;
  }
  push(v: number): void {
    const a = this.a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }
  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let mv = last;
        if (l < a.length && a[l]! < mv) {
          m = l;
          mv = a[l]!;
        }
        if (r < a.length && a[r]! < mv) m = r;
        if (m === i) break;
        a[i] = a[m]!;
        i = m;
      }
      a[i] = last;
    }
    return top;
  }
}

export class OnnxGraph {
  readonly nodes: readonly GraphNode[];
  readonly initializers: ReadonlyMap<string, TensorProto>;
  readonly sparseInitializers: ReadonlyMap<string, SparseTensorProto>;
  /** Graph inputs that are not initializers (old exporters list every weight as an input too). */
  readonly inputs: readonly ValueInfoProto[];
  readonly outputs: readonly ValueInfoProto[];
  private readonly producers = new Map<string, GraphNode>();
  private readonly consumerLists = new Map<string, GraphNode[]>();
  private readonly infos = new Map<string, ValueInfoProto>();
  private order?: GraphNode[];

  constructor(
    readonly proto: GraphProto,
    readonly source = '<graph>',
  ) {
    const inits = new Map<string, TensorProto>();
    for (const t of proto.initializer) inits.set(t.name, t);
    const sparse = new Map<string, SparseTensorProto>();
    for (const s of proto.sparseInitializer) if (s.values) sparse.set(s.values.name, s);
    this.initializers = inits;
    this.sparseInitializers = sparse;
    this.inputs = proto.input.filter((v) => !inits.has(v.name) && !sparse.has(v.name));
    this.outputs = proto.output;
    for (const v of [...proto.valueInfo, ...proto.input, ...proto.output]) if (v.name) this.infos.set(v.name, v);

    this.nodes = proto.node.map((p, index) => ({
      index,
      name: p.name || `${p.opType}#${index}`,
      opType: p.opType,
      domain: p.domain === 'ai.onnx' ? '' : p.domain,
      inputs: p.input,
      outputs: p.output,
      implicitInputs: [...new Set(subgraphReads(p))],
      proto: p,
    }));
    for (const n of this.nodes) {
      for (const o of n.outputs) {
        if (!o) continue;
        const other = this.producers.get(o);
        if (other) {
          throw new OnnxFormatError(
            `${source}: tensor '${o}' is produced by two nodes, ${nodeLabel(other)} and ${nodeLabel(n)}; expected every tensor to have one producer (ONNX graphs are SSA)`,
          );
        }
        this.producers.set(o, n);
      }
      for (const i of new Set([...n.inputs, ...n.implicitInputs])) {
        if (!i) continue;
        let list = this.consumerLists.get(i);
        if (!list) this.consumerLists.set(i, (list = []));
        list.push(n);
      }
    }
  }

  static of(model: OnnxModel): OnnxGraph {
    return new OnnxGraph(model.graph, model.source);
  }

  get inputNames(): string[] {
    return this.inputs.map((v) => v.name);
  }

  get outputNames(): string[] {
    return this.outputs.map((v) => v.name);
  }

  /** The node that computes `tensor`; undefined for graph inputs, initializers and unknown names. */
  producer(tensor: string): GraphNode | undefined {
    return this.producers.get(tensor);
  }

  /** Nodes that read `tensor` (directly or from a subgraph), in graph order. */
  consumers(tensor: string): readonly GraphNode[] {
    return this.consumerLists.get(tensor) ?? [];
  }

  /** Declared type of a tensor, from graph inputs, outputs or value_info. */
  valueInfo(tensor: string): ValueInfoProto | undefined {
    return this.infos.get(tensor);
  }

  isInitializer(tensor: string): boolean {
    return this.initializers.has(tensor) || this.sparseInitializers.has(tensor);
  }

  isGraphInput(tensor: string): boolean {
    return this.inputs.some((v) => v.name === tensor);
  }

  /** Whether the name exists in the graph at all (input, initializer or node output). */
  has(tensor: string): boolean {
    return this.producers.has(tensor) || this.isInitializer(tensor) || this.proto.input.some((v) => v.name === tensor);
  }

  /** Every tensor name defined in the graph. */
  tensorNames(): Set<string> {
    const names = new Set<string>([...this.proto.input.map((v) => v.name), ...this.initializers.keys(), ...this.sparseInitializers.keys()]);
    for (const k of this.producers.keys()) names.add(k);
    return names;
  }

  /** Nodes whose outputs `n` reads. */
  private dependencies(n: GraphNode): GraphNode[] {
    const deps = new Set<GraphNode>();
    for (const i of [...n.inputs, ...n.implicitInputs]) {
      const p = i ? this.producers.get(i) : undefined;
      if (p) deps.add(p);
    }
    return [...deps];
  }

  /**
   * Nodes in an order where each comes after the nodes it reads from. Stable: among the valid
   * orders it picks the one closest to the file's, so an already sorted graph keeps its order.
   * Throws OnnxFormatError naming the nodes of a cycle.
   */
  topologicalOrder(): GraphNode[] {
    if (this.order) return [...this.order];
    const n = this.nodes.length;
    const indegree = new Array<number>(n).fill(0);
    const dependents: number[][] = this.nodes.map(() => []);
    for (const node of this.nodes) {
      for (const d of this.dependencies(node)) {
        indegree[node.index]!++;
        dependents[d.index]!.push(node.index);
      }
    }
    const ready = new MinHeap();
    indegree.forEach((d, i) => d === 0 && ready.push(i));
    const order: GraphNode[] = [];
    while (ready.size > 0) {
      const i = ready.pop();
      order.push(this.nodes[i]!);
      for (const j of dependents[i]!) if (--indegree[j]! === 0) ready.push(j);
    }
    if (order.length < n) throw this.cycleError(new Set(this.nodes.filter((x) => indegree[x.index]! > 0)));
    this.order = order;
    return [...order];
  }

  /** Whether graph.node is already in a topological order (ONNX requires it; some tools break it). */
  isTopologicallySorted(): boolean {
    const order = this.topologicalOrder();
    return order.every((node, i) => node.index === i);
  }

  private cycleError(stuck: Set<GraphNode>): OnnxFormatError {
    // Walk backwards through stuck nodes until one repeats: that stretch is a cycle.
    let cur = [...stuck][0]!;
    const seen = new Map<GraphNode, number>();
    const path: GraphNode[] = [];
    while (!seen.has(cur)) {
      seen.set(cur, path.length);
      path.push(cur);
      cur = this.dependencies(cur).find((d) => stuck.has(d))!;
    }
    const cycle = path.slice(seen.get(cur)!).reverse();
    // Start at the node that comes first in the file, so the message does not depend on the walk.
    const first = cycle.reduce((m, n, i) => (n.index < cycle[m]!.index ? i : m), 0);
    const ordered = [...cycle.slice(first), ...cycle.slice(0, first)];
    ordered.push(ordered[0]!);
    return new OnnxFormatError(
      `${this.source}: the graph has a cycle: ${ordered.map(nodeLabel).join(' → ')}; expected an acyclic graph ` +
        `(${stuck.size} node${stuck.size === 1 ? ' is' : 's are'} on it or after it)`,
    );
  }

  /**
   * The nodes needed to compute `outputs`, in topological order. Traversal stops at `stopAt`
   * names (treated as given), graph inputs and initializers.
   */
  requiredNodes(outputs: Iterable<string>, stopAt: Iterable<string> = []): GraphNode[] {
    const stop = new Set(stopAt);
    const needed = new Set<GraphNode>();
    const stack = [...outputs];
    const visited = new Set<string>();
    while (stack.length > 0) {
      const t = stack.pop()!;
      if (!t || visited.has(t) || stop.has(t)) continue;
      visited.add(t);
      const p = this.producers.get(t);
      if (!p || needed.has(p)) continue;
      needed.add(p);
      stack.push(...p.inputs, ...p.implicitInputs);
    }
    return this.topologicalOrder().filter((n) => needed.has(n));
  }

  /** Count of nodes per op type (`domain::Op` outside the default domain), most frequent first. */
  opHistogram(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const n of this.nodes) {
      const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}::${n.opType}` : n.opType;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return new Map([...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
  }
}

// ---- attributes ----

type NodeLike = GraphNode | NodeProto;

function protoOf(n: NodeLike): NodeProto {
  return 'proto' in n ? n.proto : n;
}

function describeNode(n: NodeLike): string {
  const p = protoOf(n);
  return `node '${'index' in n ? n.name : p.name || p.opType}' (${p.opType})`;
}

export function getAttribute(node: NodeLike, name: string): AttributeProto | undefined {
  return protoOf(node).attribute.find((a) => a.name === name);
}

function attrType(a: AttributeProto): AttrType {
  if (a.type !== AttrType.UNDEFINED) return a.type;
  // IR 1 files carry no type; guess from the field in use.
  if (a.ints.length) return AttrType.INTS;
  if (a.floats.length) return AttrType.FLOATS;
  if (a.strings.length) return AttrType.STRINGS;
  if (a.t) return AttrType.TENSOR;
  if (a.g) return AttrType.GRAPH;
  if (a.s.length) return AttrType.STRING;
  if (a.f !== 0) return AttrType.FLOAT;
  return AttrType.INT;
}

function wrongType(node: NodeLike, a: AttributeProto, want: string): OnnxFormatError {
  return new OnnxFormatError(`${describeNode(node)}: attribute '${a.name}' is ${AttrType[attrType(a)]}; expected ${want}`);
}

export function attrInt(node: NodeLike, name: string, dflt: number): number;
export function attrInt(node: NodeLike, name: string): number | undefined;
export function attrInt(node: NodeLike, name: string, dflt?: number): number | undefined {
  const a = getAttribute(node, name);
  if (!a) return dflt;
  if (attrType(a) !== AttrType.INT) throw wrongType(node, a, 'INT');
  return Number(a.i);
}

export function attrInts(node: NodeLike, name: string): number[] | undefined {
  const a = getAttribute(node, name);
  if (!a) return undefined;
  if (attrType(a) !== AttrType.INTS) throw wrongType(node, a, 'INTS');
  return a.ints.map(Number);
}

export function attrFloat(node: NodeLike, name: string, dflt: number): number;
export function attrFloat(node: NodeLike, name: string): number | undefined;
export function attrFloat(node: NodeLike, name: string, dflt?: number): number | undefined {
  const a = getAttribute(node, name);
  if (!a) return dflt;
  if (attrType(a) !== AttrType.FLOAT) throw wrongType(node, a, 'FLOAT');
  return a.f;
}

export function attrFloats(node: NodeLike, name: string): number[] | undefined {
  const a = getAttribute(node, name);
  if (!a) return undefined;
  if (attrType(a) !== AttrType.FLOATS) throw wrongType(node, a, 'FLOATS');
  return [...a.floats];
}

export function attrString(node: NodeLike, name: string, dflt: string): string;
export function attrString(node: NodeLike, name: string): string | undefined;
export function attrString(node: NodeLike, name: string, dflt?: string): string | undefined {
  const a = getAttribute(node, name);
  if (!a) return dflt;
  if (attrType(a) !== AttrType.STRING) throw wrongType(node, a, 'STRING');
  return new TextDecoder().decode(a.s);
}

export function attrTensor(node: NodeLike, name: string): TensorProto | undefined {
  const a = getAttribute(node, name);
  if (!a) return undefined;
  if (attrType(a) !== AttrType.TENSOR || !a.t) throw wrongType(node, a, 'TENSOR');
  return a.t;
}
