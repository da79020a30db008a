// Cut a model into a self-contained piece: the nodes that compute `outputs` from `inputs`, with
// the weights they use and typed graph inputs/outputs. This is how an early-exit network becomes
// per-device stages (stage k takes the features of stage k-1 and yields its exit and features).
import { clone, create, isFieldSet } from '@bufbuild/protobuf';
import { InputError, UnsupportedError } from '../util/errors.js';
import {
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  SparseTensorProtoSchema,
  TensorAnnotationSchema,
  TensorProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  StringStringEntryProtoSchema,
  type ModelProto,
  type ValueInfoProto,
} from './gen/onnx_pb.js';
import { OnnxGraph } from './graph.js';
import { OnnxModel } from './model.js';
import { inferShapes } from './shapes.js';

export interface ExtractOptions {
  /** Name of the new graph (default: the original's). */
  graphName?: string;
}

function list(names: readonly string[], max = 12): string {
  const shown = names.slice(0, max).map((n) => `'${n}'`).join(', ');
  return names.length > max ? `${shown}, … (${names.length} in all)` : shown;
}

/** A copy of the model's top level without its graph and training info (which describe the full graph). */
function topLevelCopy(model: OnnxModel): ModelProto {
  const p = model.proto;
  const graph = p.graph;
  const training = p.trainingInfo;
  p.graph = undefined;
  p.trainingInfo = [];
  try {
    return clone(ModelProtoSchema, p);
  } finally {
    p.graph = graph;
    p.trainingInfo = training;
  }
}

/**
 * A new model holding only the nodes needed to compute `outputs` from `inputs` (plus the
 * initializers they read). Inputs and outputs get their declared types, or inferred ones with
 * batch-dependent dimensions left symbolic. Throws InputError when a name does not exist or an
 * output needs a graph input that is not among `inputs`.
 */
export function extractSubgraph(model: OnnxModel, inputs: readonly string[], outputs: readonly string[], opts: ExtractOptions = {}): OnnxModel {
  const graph = OnnxGraph.of(model);
  const src = model.source;
  if (outputs.length === 0) throw new InputError(`${src}: extractSubgraph needs at least one output`);
  const known = graph.tensorNames();
  const unknown = [...inputs, ...outputs].filter((n) => !known.has(n));
  if (unknown.length > 0) {
    throw new InputError(
      `${src}: ${unknown.length === 1 ? 'tensor' : 'tensors'} ${list(unknown)} not found in the graph; expected names of graph inputs, initializers or node outputs such as ${list([...known], 8)}`,
    );
  }

  const given = new Set(inputs);
  const needed = new Set<number>();
  const usedInits = new Set<string>();
  const missing = new Map<string, string>();
  const stack: [string, string][] = outputs.map((o) => [o, o]);
  const visited = new Set<string>();
  while (stack.length > 0) {
    const [t, root] = stack.pop()!;
    if (!t || visited.has(t)) continue;
    visited.add(t);
    if (given.has(t)) continue;
    if (graph.isInitializer(t)) {
      usedInits.add(t);
      continue;
    }
    const p = graph.producer(t);
    if (p) {
      needed.add(p.index);
      for (const i of [...p.inputs, ...p.implicitInputs]) stack.push([i, root]);
    } else if (!missing.has(t)) {
      missing.set(t, root);
    }
  }
  if (missing.size > 0) {
    const [t, root] = [...missing][0]!;
    throw new InputError(
      `${src}: output '${root}' is not reachable from inputs [${list([...inputs])}]: it depends on ${graph.isGraphInput(t) ? 'graph input' : 'tensor'} '${t}', ` +
        `which is not among the given inputs${missing.size > 1 ? ` (nor are ${list([...missing.keys()].slice(1))})` : ''}; add it to the inputs or cut later in the graph`,
    );
  }

  // Inference at two batch sizes tells which dimensions depend on the batch: those stay symbolic.
  const at1 = inferShapes(graph, { dynamicDim: 1 });
  const at2 = inferShapes(graph, { dynamicDim: 2 });
  const batchParam = firstDimParam(graph) ?? 'batch';

  const valueInfo = (name: string): ValueInfoProto => {
    const declared = graph.valueInfo(name);
    const tt = declared?.type?.value.case === 'tensorType' ? declared.type.value.value : undefined;
    if (declared && tt?.shape && tt.elemType) return clone(ValueInfoProtoSchema, declared);
    const info = at1.tensors.get(name);
    const dtype = info?.dtype || tt?.elemType || 0;
    if (!dtype) {
      throw new UnsupportedError(`${src}: cannot tell the element type of '${name}' (no value_info, and shape inference did not reach it); add value_info for it to the model`);
    }
    const other = at2.tensors.get(name)?.shape;
    const tensorType = create(TypeProto_TensorSchema, { elemType: dtype });
    if (info?.shape) {
      tensorType.shape = create(TensorShapeProtoSchema, {
        dim: info.shape.map((d, i) =>
          create(TensorShapeProto_DimensionSchema, {
            value: other && other[i] !== d ? { case: 'dimParam', value: batchParam } : { case: 'dimValue', value: BigInt(d) },
          }),
        ),
      });
    }
    return create(ValueInfoProtoSchema, {
      name,
      type: create(TypeProtoSchema, { value: { case: 'tensorType', value: tensorType } }),
    });
  };

  const order = graph.topologicalOrder().filter((n) => needed.has(n.index));
  const produced = new Set(order.flatMap((n) => n.outputs));
  const boundary = new Set([...inputs, ...outputs]);
  const g = graph.proto;
  const newGraph = create(GraphProtoSchema, {
    name: opts.graphName ?? g.name,
    node: order.map((n) => clone(NodeProtoSchema, n.proto)),
    initializer: g.initializer.filter((t) => usedInits.has(t.name) && !given.has(t.name)).map((t) => clone(TensorProtoSchema, t)),
    sparseInitializer: g.sparseInitializer
      .filter((s) => s.values && usedInits.has(s.values.name) && !given.has(s.values.name))
      .map((s) => clone(SparseTensorProtoSchema, s)),
    input: inputs.map(valueInfo),
    output: outputs.map(valueInfo),
    valueInfo: g.valueInfo.filter((v) => produced.has(v.name) && !boundary.has(v.name)).map((v) => clone(ValueInfoProtoSchema, v)),
    quantizationAnnotation: g.quantizationAnnotation
      .filter((q) => produced.has(q.tensorName) || boundary.has(q.tensorName) || usedInits.has(q.tensorName))
      .map((q) => clone(TensorAnnotationSchema, q)),
    metadataProps: g.metadataProps.map((e) => clone(StringStringEntryProtoSchema, e)),
  });
  if (isFieldSet(g, GraphProtoSchema.field.docString)) newGraph.docString = g.docString;

  const proto = topLevelCopy(model);
  proto.graph = newGraph;
  return new OnnxModel(proto, `${src} [${list([...inputs])} → ${list([...outputs])}]`, model.baseDir);
}

/** The symbolic name of the first graph input's leading dimension (the batch), if it has one. */
function firstDimParam(graph: OnnxGraph): string | undefined {
  for (const v of graph.inputs) {
    const tt = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
    const d = tt?.shape?.dim[0];
    if (d?.value.case === 'dimParam' && d.value.value) return d.value.value;
  }
  return undefined;
}
