// Shared test helpers: real onnxruntime sessions on files, deterministic random inputs, and a
// recursive file finder (Node 20 has no fs.glob).
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { create } from '@bufbuild/protobuf';
import { OnnxGraph, OnnxModel, valueInfoShape } from '../../src/onnx/index.js';
import { DataType } from '../../src/onnx/dtype.js';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType as AttrType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type AttributeProto,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../../src/onnx/gen/onnx_pb.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/onnx/', import.meta.url));
export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const fixture = (name: string) => path.join(FIXTURES, name);

import { mulberry32 as rng } from '../../src/util/random.js';
export { rng };

export type Feeds = Record<string, ort.Tensor>;

/** Random inputs for every graph input of `model`, symbolic dims set to 1. */
export function randomFeeds(model: OnnxModel, seed = 1): Feeds {
  const next = rng(seed);
  const feeds: Feeds = {};
  for (const v of OnnxGraph.of(model).inputs) {
    const info = valueInfoShape(v, 1);
    if (!info?.shape) throw new Error(`input ${v.name} has no shape`);
    const n = info.shape.reduce((a, b) => a * b, 1);
    switch (info.dtype) {
      case DataType.FLOAT:
        feeds[v.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, () => next() * 2 - 1), info.shape);
        break;
      case DataType.INT64:
        feeds[v.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(next() * 4))), info.shape);
        break;
      case DataType.INT32:
        feeds[v.name] = new ort.Tensor('int32', Int32Array.from({ length: n }, () => Math.floor(next() * 4)), info.shape);
        break;
      case DataType.UINT8:
        feeds[v.name] = new ort.Tensor('uint8', Uint8Array.from({ length: n }, () => Math.floor(next() * 256)), info.shape);
        break;
      case DataType.BOOL:
        feeds[v.name] = new ort.Tensor('bool', Uint8Array.from({ length: n }, () => (next() < 0.5 ? 1 : 0)), info.shape);
        break;
      default:
        throw new Error(`input ${v.name}: no random generator for data type ${info.dtype}`);
    }
  }
  return feeds;
}

/**
 * Run a model file with onnxruntime (single thread, so results are bit-for-bit repeatable). Compare
 * two *different* graphs (a stage against the full model) at 'extended' or below: at 'all',
 * onnxruntime's layout transforms pick kernels by graph structure and the last bits can differ.
 */
export async function runFile(
  file: string,
  feeds: Feeds,
  graphOptimizationLevel: 'disabled' | 'basic' | 'extended' | 'all' = 'all',
): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel });
  try {
    const wanted: Feeds = {};
    for (const name of session.inputNames) wanted[name] = feeds[name]!;
    return await session.run(wanted);
  } finally {
    await session.release();
  }
}

export function plain(t: ort.Tensor): { dims: readonly number[]; data: unknown[] } {
  return { dims: t.dims, data: Array.from(t.data as ArrayLike<unknown>) };
}

export async function tempDir(prefix = 'edgeexit-onnx-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Every file under `dir` whose name ends with `ext` (empty list when dir is absent). */
export async function findFiles(dir: string, ext: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && e.name !== 'node_modules' && !e.name.startsWith('.')) out.push(...(await findFiles(p, ext)));
    else if (e.isFile() && e.name.endsWith(ext)) out.push(p);
  }
  return out.sort();
}

// ---- building small models in code ----

export type AttrInit = number | number[] | string | TensorProto | { float: number } | { floats: number[] };

export function attr(name: string, value: AttrInit): AttributeProto {
  if (typeof value === 'number') return create(AttributeProtoSchema, { name, type: AttrType.INT, i: BigInt(value) });
  if (typeof value === 'string') return create(AttributeProtoSchema, { name, type: AttrType.STRING, s: new TextEncoder().encode(value) });
  if (Array.isArray(value)) return create(AttributeProtoSchema, { name, type: AttrType.INTS, ints: value.map(BigInt) });
  if ('float' in value) return create(AttributeProtoSchema, { name, type: AttrType.FLOAT, f: value.float });
  if ('floats' in value) return create(AttributeProtoSchema, { name, type: AttrType.FLOATS, floats: value.floats });
  return create(AttributeProtoSchema, { name, type: AttrType.TENSOR, t: value });
}

export function graphAttr(name: string, g: GraphProto): AttributeProto {
  return create(AttributeProtoSchema, { name, type: AttrType.GRAPH, g });
}

export function node(opType: string, input: string[], output: string[], attrs: Record<string, AttrInit> = {}, name = output[0] ?? opType): NodeProto {
  return create(NodeProtoSchema, { opType, input, output, name, attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) });
}

export function tensorValueInfo(name: string, elemType: number, dims?: (number | string)[]): ValueInfoProto {
  const tensorType = create(TypeProto_TensorSchema, { elemType });
  if (dims) {
    tensorType.shape = create(TensorShapeProtoSchema, {
      dim: dims.map((d) =>
        create(TensorShapeProto_DimensionSchema, { value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d } }),
      ),
    });
  }
  return create(ValueInfoProtoSchema, { name, type: create(TypeProtoSchema, { value: { case: 'tensorType', value: tensorType } }) });
}

export function buildModel(spec: {
  inputs: ValueInfoProto[];
  outputs: (string | ValueInfoProto)[];
  nodes: NodeProto[];
  initializers?: TensorProto[];
  opset?: number;
}): OnnxModel {
  const graph = create(GraphProtoSchema, {
    name: 'test',
    node: spec.nodes,
    input: spec.inputs,
    output: spec.outputs.map((o) => (typeof o === 'string' ? tensorValueInfo(o, DataType.FLOAT) : o)),
    initializer: spec.initializers ?? [],
  });
  return OnnxModel.fromProto(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: 'edgeexit-test',
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(spec.opset ?? 13) })],
      graph,
    }),
    'test-model',
  );
}
