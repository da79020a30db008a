// One ONNX graph for a whole multi-exit chain at batch 1, the exit decision taken inside it: stage
// k's nodes, then its exit scored (max softmax probability at a temperature) and compared with
// its threshold, then an `If` whose then-branch returns exit k's logits and whose else-branch
// holds stage k+1 and the next decision. One onnxruntime call per image; carried tensors never
// leave onnxruntime; the work after an exit is not run. Thresholds and temperatures are inputs,
// so calibration changes no byte of it.
//
// It is built from the compiled stage models (not the source model), so it runs exactly the
// nodes the staged bundle runs, at the same precision, and their outputs can be compared one to
// one. Names a stage keeps private are prefixed with its index, since two stage files may reuse a
// name for different tensors; names in a stage's inputs/outputs are the chain's hand-over names
// and mean the same tensor everywhere.
import { create } from '@bufbuild/protobuf';
import { UnsupportedError } from '../util/errors.js';
import { OnnxModel, DataType, type GraphProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/index.js';
import { copyStage, joinedOpsets, newKnown, type Known, type StageModel } from './stage-copy.js';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
} from '../onnx/gen/onnx_pb.js';

/** Names of the fused graph's inputs and outputs (the runtime feeds and reads these). */
export const IF_GRAPH_IO = Object.freeze({
  /** float32 [exits − 1]: exit k is taken when its score ≥ thresholds[k]; above 1 never. */
  thresholds: 'edgeexit/thresholds',
  /** float32 [exits]: softmax temperature per exit. */
  temperatures: 'edgeexit/temperatures',
  /** float32 [1, classes]: the logits of the exit taken. */
  logits: 'edgeexit/logits',
  /** int64 [1]: the index of the exit taken. */
  exit: 'edgeexit/exit',
});

/** metadata_props key: how many stage nodes the fused graph left out because an earlier stage computed the same value. */
export const IF_GRAPH_REUSED = 'edgeexit/reused-nodes';

/** One compiled stage as the manifest describes it, with its model. */
export type IfGraphStage = StageModel;

// The decision nodes need opset 13: GreaterOrEqual (12) and Softmax over one axis (13; before, it flattened).
const MIN_OPSET = 13;

function valueInfo(name: string, elemType: number, dims?: (number | string)[]): ValueInfoProto {
  const shape = dims
    ? create(TensorShapeProtoSchema, {
        dim: dims.map((d) => create(TensorShapeProto_DimensionSchema, typeof d === 'number' ? { value: { case: 'dimValue', value: BigInt(d) } } : { value: { case: 'dimParam', value: d } })),
      })
    : undefined;
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType, ...(shape ? { shape } : {}) }) } }),
  });
}

function node(op: string, inputs: string[], outputs: string[], attrs: Record<string, number | GraphProto> = {}): NodeProto {
  const attribute = Object.entries(attrs).map(([name, v]) =>
    typeof v === 'number'
      ? create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(v) })
      : create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.GRAPH, g: v }),
  );
  return create(NodeProtoSchema, { opType: op, input: inputs, output: outputs, attribute, name: outputs[0]! });
}

function int64Scalar(name: string, v: number, dims: number[] = []): TensorProto {
  return create(TensorProtoSchema, { name, dataType: DataType.INT64, dims: dims.map(BigInt), int64Data: [BigInt(v)] });
}

/** Nodes that score exit k (max softmax probability at temperature) and compare it with its threshold. */
function decision(exit: string, k: number): { nodes: NodeProto[]; initializers: TensorProto[]; cond: string } {
  const p = `exit${k}/`;
  const nodes = [
    node('Gather', [IF_GRAPH_IO.temperatures, `${p}k`], [`${p}t`], { axis: 0 }),
    node('Div', [exit, `${p}t`], [`${p}scaled`]),
    node('Softmax', [`${p}scaled`], [`${p}prob`], { axis: -1 }),
    node('ReduceMax', [`${p}prob`], [`${p}score`], { keepdims: 0 }),
    node('Gather', [IF_GRAPH_IO.thresholds, `${p}k`], [`${p}threshold`], { axis: 0 }),
    node('GreaterOrEqual', [`${p}score`, `${p}threshold`], [`${p}cond`]),
  ];
  return { nodes, initializers: [int64Scalar(`${p}k`, k)], cond: `${p}cond` };
}

/** A branch graph that returns exit k's logits and index. */
function leave(exit: string, k: number, classes: number): GraphProto {
  const logits = `exit${k}/out_logits`;
  const index = `exit${k}/out_exit`;
  return create(GraphProtoSchema, {
    name: `exit${k}`,
    node: [node('Identity', [exit], [logits]), node('Identity', [`exit${k}/index`], [index])],
    initializer: [int64Scalar(`exit${k}/index`, k, [1])],
    output: [valueInfo(logits, DataType.FLOAT, [1, classes]), valueInfo(index, DataType.INT64, [1])],
  });
}

/**
 * Stage k onward as a node list: its body, then (unless last) the decision and an If whose
 * else-branch is stage k+1 onward. Returns the nodes and the names of the logits/exit they produce.
 */
function chainFrom(stages: readonly IfGraphStage[], k: number, classes: number, known: Known): { nodes: NodeProto[]; initializers: TensorProto[]; logits: string; exit: string } {
  // The outermost If writes the graph outputs itself (no Identity after it: one node less per call).
  const top = k === 0;
  const stage = stages[k]!;
  const body = copyStage(stage, k, known, { reuseDequantize: false });
  const exitName = stage.outputs[0]!;
  if (k === stages.length - 1) {
    const done = leave(exitName, k, classes);
    return { nodes: [...body.nodes, ...done.node], initializers: [...body.initializers, ...done.initializer], logits: done.output[0]!.name, exit: done.output[1]!.name };
  }
  const d = decision(exitName, k);
  const rest = chainFrom(stages, k + 1, classes, known);
  const logits = top ? IF_GRAPH_IO.logits : `if${k}/logits`;
  const exit = top ? IF_GRAPH_IO.exit : `if${k}/exit`;
  const restGraph = create(GraphProtoSchema, {
    name: `after_exit${k}`,
    node: rest.nodes,
    initializer: rest.initializers,
    output: [valueInfo(rest.logits, DataType.FLOAT, [1, classes]), valueInfo(rest.exit, DataType.INT64, [1])],
  });
  const branch = node('If', [d.cond], [logits, exit], { then_branch: leave(exitName, k, classes), else_branch: restGraph });
  return { nodes: [...body.nodes, ...d.nodes, branch], initializers: [...body.initializers, ...d.initializers], logits, exit };
}

/**
 * Fuse a compiled multi-exit chain into one batch-1 model with the exit decisions inside (see
 * the header). Inputs: the chain's image input (batch 1), IF_GRAPH_IO.thresholds and
 * IF_GRAPH_IO.temperatures; outputs IF_GRAPH_IO.logits and IF_GRAPH_IO.exit.
 *
 * @example
 * const fused = buildIfGraph(stages, { input: 'image', classes: 10 });
 * await writeModel(fused, 'fused.onnx');
 */
export function buildIfGraph(stages: readonly IfGraphStage[], opts: { input: string; classes: number; source?: string }): OnnxModel {
  if (stages.length < 2) throw new UnsupportedError(`the fused If-graph form needs a chain of at least 2 stages, got ${stages.length}`);
  const first = stages[0]!.model;
  const known = newKnown();
  const chain = chainFrom(stages, 0, opts.classes, known);
  const inputVi = first.graph.input.find((v) => v.name === opts.input);
  if (!inputVi) throw new UnsupportedError(`stage 0 has no input '${opts.input}' (it has ${first.graph.input.map((v) => v.name).join(', ')})`);
  const image = create(ValueInfoProtoSchema, inputVi);
  // Batch 1: the If condition must be one value, so the batch dim is fixed.
  const dims = image.type?.value.case === 'tensorType' ? image.type.value.value.shape?.dim : undefined;
  if (dims?.[0]) dims[0] = create(TensorShapeProto_DimensionSchema, { value: { case: 'dimValue', value: 1n } });
  const K = stages.length;
  const graph = create(GraphProtoSchema, {
    name: `${first.graph.name || 'model'}-if`,
    node: chain.nodes,
    initializer: chain.initializers,
    input: [image, valueInfo(IF_GRAPH_IO.thresholds, DataType.FLOAT, [K - 1]), valueInfo(IF_GRAPH_IO.temperatures, DataType.FLOAT, [K])],
    output: [valueInfo(IF_GRAPH_IO.logits, DataType.FLOAT, [1, opts.classes]), valueInfo(IF_GRAPH_IO.exit, DataType.INT64, [1])],
  });
  const proto = create(ModelProtoSchema, {
    ...first.proto,
    graph,
    opsetImport: joinedOpsets(stages, MIN_OPSET),
  });
  const model = new OnnxModel(proto, opts.source ?? `${first.source} (If-graph)`);
  model.setMetadata(IF_GRAPH_REUSED, String(known.reused));
  return model;
}
