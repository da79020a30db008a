// Copying compiled stages into one graph (the fused If-graph, the whole-chain graph): each stage's
// nodes and weights with its private names prefixed by its index, since two stage files may reuse
// a name for different tensors, and its hand-over names kept, since they mean the same tensor in
// every stage. A node an earlier stage already computed (the compiler's `recompute` repeats a
// trunk) is left out and the earlier value used.
import { createHash } from 'node:crypto';
import { create, toBinary } from '@bufbuild/protobuf';
import { UnsupportedError } from '../util/errors.js';
import type { NodeProto, OnnxModel, TensorProto } from '../onnx/index.js';
import { AttributeProtoSchema, AttributeProto_AttributeType, NodeProtoSchema, OperatorSetIdProtoSchema, TensorProtoSchema, type OperatorSetIdProto } from '../onnx/gen/onnx_pb.js';

/** One compiled stage as the manifest describes it, with its model. */
export interface StageModel {
  model: OnnxModel;
  inputs: readonly string[];
  /** The exit's logits first, then what the stage hands on. */
  outputs: readonly string[];
}

/**
 * What earlier stages computed, visible to the stages copied after them. Keys are the node's op,
 * attributes and (resolved) inputs, weights by their bytes.
 */
export interface Known {
  nodes: Map<string, string[]>;
  /** Nodes left out because an earlier stage computed the same value. */
  reused: number;
}

/** An empty record, for the first stage copied. */
export function newKnown(): Known {
  return { nodes: new Map(), reused: 0 };
}

function weightKey(t: TensorProto): string {
  return createHash('sha256').update(toBinary(TensorProtoSchema, create(TensorProtoSchema, { ...t, name: '' }))).digest('base64');
}

function nodeKey(n: NodeProto, inputs: readonly string[]): string {
  const attrs = n.attribute.map((a) => Buffer.from(toBinary(AttributeProtoSchema, a)).toString('base64')).join(',');
  return `${n.domain}|${n.opType}|${attrs}|${inputs.join(',')}|${n.output.length}`;
}

export interface CopyOptions {
  /**
   * Whether a DequantizeLinear may be taken from an earlier stage. Not across If scopes:
   * onnxruntime fuses a Q/DQ group into an int8 kernel only when the whole group sits in one graph.
   */
  reuseDequantize: boolean;
}

/**
 * Copy stage k's nodes and weights, private names prefixed, hand-over names kept; a node an
 * earlier stage already computed is left out and its value reused (`known` is updated). Weights
 * are never shared across stages: onnxruntime sees a value from an enclosing scope as a runtime
 * input, not a constant, and then fuses neither Q/DQ groups nor NCHWc convolutions around it; so
 * nodes are matched by their weights' bytes and each kept node reads its own stage's copy.
 *
 * @example
 * const known = newKnown();
 * const a = copyStage(stages[0], 0, known, { reuseDequantize: true });
 * const b = copyStage(stages[1], 1, known, { reuseDequantize: true }); // b.reused: stage 0's trunk
 */
export function copyStage(stage: StageModel, k: number, known: Known, opts: CopyOptions): { nodes: NodeProto[]; initializers: TensorProto[]; reused: number } {
  const g = stage.model.graph;
  const shared = new Set([...stage.inputs, ...stage.outputs]);
  const alias = new Map<string, string>();
  const rename = (n: string): string => (n === '' || shared.has(n) ? n : `s${k}/${n}`);
  const resolve = (n: string): string => alias.get(n) ?? rename(n);
  const weightIds = new Map(g.initializer.map((t) => [t.name, `w:${weightKey(t)}`]));
  const nodes: NodeProto[] = [];
  let reused = 0;
  for (const n of g.node) {
    if (n.attribute.some((a) => a.type === AttributeProto_AttributeType.GRAPH || a.type === AttributeProto_AttributeType.GRAPHS)) {
      throw new UnsupportedError(`stage ${k}: node '${n.name}' (${n.opType}) holds a subgraph; stages are joined into one graph only without control flow`);
    }
    const inputs = n.input.map(resolve);
    const key = nodeKey(n, n.input.map((i, j) => weightIds.get(i) ?? inputs[j]!));
    const earlier = n.opType === 'DequantizeLinear' && !opts.reuseDequantize ? undefined : known.nodes.get(key);
    if (earlier) {
      reused++;
      n.output.forEach((o, i) => {
        if (o === '') return;
        // A hand-over name keeps its name (later stages read it): an Identity of the earlier value.
        if (shared.has(o)) nodes.push(create(NodeProtoSchema, { opType: 'Identity', input: [earlier[i]!], output: [o], name: o }));
        else alias.set(o, earlier[i]!);
      });
      continue;
    }
    const outputs = n.output.map(rename);
    nodes.push(create(NodeProtoSchema, { ...n, name: `s${k}/${n.name}`, input: inputs, output: outputs }));
    known.nodes.set(key, outputs);
  }
  const read = new Set(nodes.flatMap((n) => n.input));
  const initializers = g.initializer.filter((t) => read.has(rename(t.name))).map((t) => create(TensorProtoSchema, { ...t, name: rename(t.name) }));
  known.reused += reused;
  return { nodes, initializers, reused };
}

/**
 * The opset imports of a graph joined from `stages`: the highest version of each domain any stage
 * imports, the default domain at least `minDefault`.
 *
 * @example
 * proto.opsetImport = joinedOpsets(stages, 13);
 */
export function joinedOpsets(stages: readonly StageModel[], minDefault = 0): OperatorSetIdProto[] {
  const opsets = new Map<string, number>();
  for (const s of stages) for (const o of s.model.opsetImports) opsets.set(o.domain, Math.max(opsets.get(o.domain) ?? 0, o.version));
  if (minDefault > 0) opsets.set('', Math.max(opsets.get('') ?? 0, minDefault));
  return [...opsets].map(([domain, version]) => create(OperatorSetIdProtoSchema, { domain, version: BigInt(version) }));
}
