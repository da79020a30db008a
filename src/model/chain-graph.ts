// The stages of a multi-exit chain joined into one graph that computes the last exit only: what
// a split bundle is when no sample may leave early (thresholds null). The exit heads before the
// last and everything only they read are left out, a trunk that a later stage recomputes (the
// compiler's `recompute`) is computed once, and hand-over tensors stay inside onnxruntime, so no
// stage boundary is left: no extra call, no copy into JS and back, no layout reorder around a
// graph output. Built from the compiled stages, so it runs their nodes at their precision.
import { create } from '@bufbuild/protobuf';
import { UnsupportedError } from '../util/errors.js';
import { OnnxModel, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/index.js';
import { GraphProtoSchema, ModelProtoSchema, ValueInfoProtoSchema } from '../onnx/gen/onnx_pb.js';
import { copyStage, joinedOpsets, newKnown, type StageModel } from './stage-copy.js';

/** metadata_props key: stage nodes left out because an earlier stage computed the same value. */
export const CHAIN_GRAPH_REUSED = 'edgeexit/reused-nodes';

/** Nodes (in order) that `outputs` depend on, and the initializers those read. */
function prune(nodes: readonly NodeProto[], initializers: readonly TensorProto[], outputs: readonly string[]): { nodes: NodeProto[]; initializers: TensorProto[] } {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.output.forEach((o) => o && producer.set(o, i)));
  const keep = new Set<number>();
  const todo = [...outputs];
  while (todo.length > 0) {
    const i = producer.get(todo.pop()!);
    if (i === undefined || keep.has(i)) continue;
    keep.add(i);
    todo.push(...nodes[i]!.input.filter((x) => x !== ''));
  }
  const kept = nodes.filter((_, i) => keep.has(i));
  const read = new Set(kept.flatMap((n) => n.input));
  return { nodes: kept, initializers: initializers.filter((t) => read.has(t.name)) };
}

/** The value infos of the tensors the kept nodes read that nothing in the graph gives: the chain's inputs. */
function chainInputs(stages: readonly StageModel[], nodes: readonly NodeProto[], initializers: readonly TensorProto[]): ValueInfoProto[] {
  const given = new Set([...nodes.flatMap((n) => n.output), ...initializers.map((t) => t.name)]);
  const needed = new Set(nodes.flatMap((n) => n.input).filter((x) => x !== '' && !given.has(x)));
  const inputs: ValueInfoProto[] = [];
  for (const name of needed) {
    const vi = stages.map((s) => s.model.graph.input.find((v) => v.name === name)).find((v) => v !== undefined);
    if (!vi) throw new UnsupportedError(`joining the stages: '${name}' is read but no stage has it as an input or computes it`);
    inputs.push(create(ValueInfoProtoSchema, vi));
  }
  return inputs;
}

/**
 * Join a compiled multi-exit chain into one model whose only output is the last stage's exit
 * (see the header). Batch dims stay as the stages have them.
 *
 * @example
 * const chain = buildChainGraph(stages);
 * const session = await createSession(encodeModel(chain));
 * const out = await session.run({ image }, [stages.at(-1).outputs[0]]);
 */
export function buildChainGraph(stages: readonly StageModel[], opts: { source?: string } = {}): OnnxModel {
  if (stages.length < 2) throw new UnsupportedError(`joining stages needs a chain of at least 2 stages, got ${stages.length}`);
  const known = newKnown();
  const copied = stages.map((s, k) => copyStage(s, k, known, { reuseDequantize: true }));
  const last = stages[stages.length - 1]!;
  const exit = last.outputs[0]!;
  const { nodes, initializers } = prune(
    copied.flatMap((c) => c.nodes),
    copied.flatMap((c) => c.initializers),
    [exit],
  );
  const output = last.model.graph.output.find((v) => v.name === exit);
  if (!output) throw new UnsupportedError(`stage ${stages.length - 1} does not output its exit '${exit}'`);
  const first = stages[0]!.model;
  const graph = create(GraphProtoSchema, {
    name: `${first.graph.name || 'model'}-chain`,
    node: nodes,
    initializer: initializers,
    input: chainInputs(stages, nodes, initializers),
    output: [create(ValueInfoProtoSchema, output)],
  });
  const proto = create(ModelProtoSchema, {
    ...first.proto,
    graph,
    opsetImport: joinedOpsets(stages),
  });
  const model = new OnnxModel(proto, opts.source ?? `${first.source} (chain)`);
  model.setMetadata(CHAIN_GRAPH_REUSED, String(known.reused));
  return model;
}
