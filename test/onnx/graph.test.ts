// Graph index: producers/consumers, inputs without initializers, stable topological order,
// cycle detection, and extractSubgraph cutting the fixtures into stages whose onnxruntime
// outputs equal the full model's.
import { create } from '@bufbuild/protobuf';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, OnnxFormatError } from '../../src/util/errors.js';
import { GraphProtoSchema } from '../../src/onnx/gen/onnx_pb.js';
import { DataType, OnnxGraph, OnnxModel, attrInt, attrInts, extractSubgraph, readModel, valueInfoShape, writeModel } from '../../src/onnx/index.js';
import { buildModel, fixture, graphAttr, node, plain, randomFeeds, runFile, tempDir, tensorValueInfo } from './helpers.js';

let tmp: string;
beforeAll(async () => {
  tmp = await tempDir();
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const FEATURES = '/block1/block1.3/MaxPool_output_0';

describe('OnnxGraph', () => {
  it('indexes producers, consumers, inputs and initializers', async () => {
    const g = OnnxGraph.of(await readModel(fixture('tiny-2exit.onnx')));
    expect(g.inputNames).toEqual(['image']);
    expect(g.outputNames).toEqual(['exit_0', 'exit_1']);
    expect(g.initializers.size).toBe(16);
    expect(g.producer('exit_0')?.opType).toBe('Gemm');
    expect(g.producer('image')).toBeUndefined();
    expect(g.consumers(FEATURES).map((n) => n.opType)).toEqual(['Flatten', 'Conv']);
    expect(g.consumers('block1.0.weight').map((n) => n.name)).toEqual(['/block1/block1.0/Conv']);
    const conv = g.producer('/block1/block1.0/Conv_output_0')!;
    expect(attrInts(conv, 'kernel_shape')).toEqual([3, 3]);
    expect(attrInt(conv, 'group', 1)).toBe(1);
    expect(valueInfoShape(g.valueInfo('image')!)).toEqual({ dtype: DataType.FLOAT, shape: [1, 1, 16, 16] });
    expect([...g.opHistogram()]).toEqual([
      ['BatchNormalization', 2],
      ['Conv', 2],
      ['Flatten', 2],
      ['Gemm', 2],
      ['MaxPool', 2],
      ['Relu', 2],
    ]);
  });

  it('leaves initializers out of the inputs even when an old exporter lists them there', async () => {
    const model = await readModel(fixture('tiny-2exit.onnx'));
    const g0 = OnnxGraph.of(model);
    for (const [name, t] of g0.initializers) model.graph.input.push(tensorValueInfo(name, t.dataType, t.dims.map(Number)));
    const g = OnnxGraph.of(model);
    expect(g.proto.input.length).toBe(17);
    expect(g.inputNames).toEqual(['image']);
  });

  it('keeps the file order when it is already topological', async () => {
    const g = OnnxGraph.of(await readModel(fixture('residual-gap.onnx')));
    expect(g.topologicalOrder().map((n) => n.index)).toEqual(g.nodes.map((n) => n.index));
    expect(g.isTopologicallySorted()).toBe(true);
  });

  it('sorts a shuffled graph stably', async () => {
    const model = await readModel(fixture('tiny-2exit.onnx'));
    const original = model.graph.node.map((n) => n.name);
    model.graph.node.reverse();
    const g = OnnxGraph.of(model);
    expect(g.isTopologicallySorted()).toBe(false);
    const order = g.topologicalOrder();
    const pos = new Map(order.map((n, i) => [n.name, i]));
    for (const n of order) for (const i of n.inputs) if (g.producer(i)) expect(pos.get(g.producer(i)!.name)!).toBeLessThan(pos.get(n.name)!);
    // Among valid orders the lowest file index goes first: the reversed file puts exit 1's chain
    // (now at the front) before exit 0's head, but block1 must still come first.
    expect(order.map((n) => n.name)).toEqual([...original.slice(0, 4), ...original.slice(6), ...original.slice(4, 6)]);
  });

  it('reports a cycle with the nodes on it', () => {
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1])],
      outputs: ['y'],
      nodes: [node('Add', ['x', 'c'], ['a'], {}, 'A'), node('Relu', ['a'], ['b'], {}, 'B'), node('Neg', ['b'], ['c'], {}, 'C'), node('Relu', ['b'], ['y'], {}, 'D')],
    });
    const g = OnnxGraph.of(model);
    expect(() => g.topologicalOrder()).toThrow(OnnxFormatError);
    expect(() => g.topologicalOrder()).toThrow(/test-model: the graph has a cycle: 'A' \(Add\) → 'B' \(Relu\) → 'C' \(Neg\) → 'A' \(Add\)/);
  });

  it('refuses a tensor with two producers', () => {
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1])],
      outputs: ['y'],
      nodes: [node('Relu', ['x'], ['y'], {}, 'first'), node('Neg', ['x'], ['y'], {}, 'second')],
    });
    expect(() => OnnxGraph.of(model)).toThrow(/tensor 'y' is produced by two nodes, 'first' \(Relu\) and 'second' \(Neg\)/);
  });

  it('sees outer-scope reads of If branches as dependencies', () => {
    const branch = (op: string) =>
      create(GraphProtoSchema, { name: op, node: [node(op, ['h'], ['r'], {}, op)], output: [tensorValueInfo('r', DataType.FLOAT, [1])] });
    const iff = node('If', ['cond'], ['y'], {}, 'If');
    iff.attribute = [graphAttr('then_branch', branch('Neg')), graphAttr('else_branch', branch('Abs'))];
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1]), tensorValueInfo('cond', DataType.BOOL, [])],
      outputs: ['y'],
      // The If comes first in the file although its branches read 'h', computed after it.
      nodes: [iff, node('Relu', ['x'], ['h'], {}, 'H')],
    });
    const g = OnnxGraph.of(model);
    expect(g.nodes[0]!.implicitInputs).toEqual(['h']);
    expect(g.consumers('h').map((n) => n.opType)).toEqual(['If']);
    expect(g.topologicalOrder().map((n) => n.name)).toEqual(['H', 'If']);
    expect(g.requiredNodes(['y']).map((n) => n.name)).toEqual(['H', 'If']);
  });
});

async function save(model: OnnxModel, name: string): Promise<string> {
  const file = path.join(tmp, name);
  await writeModel(model, file);
  return file;
}

function batchOf(t: ort.Tensor, n: number): ort.Tensor {
  // Stack n copies along the batch axis.
  const data = t.data as Float32Array;
  const out = new Float32Array(data.length * n);
  for (let i = 0; i < n; i++) out.set(data, i * data.length);
  return new ort.Tensor('float32', out, [n, ...t.dims.slice(1)]);
}

describe('extractSubgraph', () => {
  it('cuts the 2-exit CNN into two stages whose outputs equal the full model', async () => {
    const full = await readModel(fixture('tiny-2exit.onnx'));
    const stage1 = extractSubgraph(full, ['image'], ['exit_0', FEATURES]);
    const stage2 = extractSubgraph(full, [FEATURES], ['exit_1']);

    expect(stage1.graph.node.map((n) => n.opType)).toEqual(['Conv', 'BatchNormalization', 'Relu', 'MaxPool', 'Flatten', 'Gemm']);
    expect(stage2.graph.node.map((n) => n.opType)).toEqual(['Conv', 'BatchNormalization', 'Relu', 'MaxPool', 'Flatten', 'Gemm']);
    expect(stage1.graph.initializer.map((t) => t.name).every((n) => n.startsWith('block1.') || n.startsWith('exit0.'))).toBe(true);
    expect(stage2.graph.initializer.map((t) => t.name).every((n) => n.startsWith('block2.') || n.startsWith('exit1.'))).toBe(true);
    expect(stage2.opsetVersion()).toBe(13);
    expect(stage2.irVersion).toBe(7);
    expect(stage2.producerName).toBe('pytorch');
    expect(stage2.getMetadata('edgeexit.fixture')).toBe('tiny-2exit.onnx');
    // The cut tensor was not declared anywhere: its type is inferred, batch left symbolic.
    const featureInfo = stage2.graph.input[0]!.type!.value;
    expect(featureInfo.case).toBe('tensorType');
    const dims = featureInfo.case === 'tensorType' ? featureInfo.value.shape!.dim.map((d) => d.value.value) : [];
    expect(dims).toEqual(['batch', 4n, 8n, 8n]);

    const [f1, f2, fullFile] = [await save(stage1, 's1.onnx'), await save(stage2, 's2.onnx'), fixture('tiny-2exit.onnx')];
    for (const batch of [1, 3]) {
      const feeds = randomFeeds(full, 11);
      const image = batchOf(feeds.image!, batch);
      const want = await runFile(fullFile, { image }, 'extended');
      const got1 = await runFile(f1, { image }, 'extended');
      const got2 = await runFile(f2, { [FEATURES]: got1[FEATURES]! }, 'extended');
      expect(plain(got1.exit_0!)).toEqual(plain(want.exit_0!));
      expect(plain(got2.exit_1!)).toEqual(plain(want.exit_1!));
    }
  });

  it('cuts across the residual block and the Shape/Gather flatten chain', async () => {
    const full = await readModel(fixture('residual-gap.onnx'));
    const cut = '/stem/stem.2/Relu_output_0';
    const head = extractSubgraph(full, ['image'], [cut]);
    const tail = extractSubgraph(full, [cut], ['logits', 'mean']);
    expect(tail.graph.node.map((n) => n.opType)).toContain('Add');
    expect(tail.graph.node.map((n) => n.opType)).toContain('Shape');
    const feeds = randomFeeds(full, 5);
    const want = await runFile(fixture('residual-gap.onnx'), feeds, 'extended');
    const mid = await runFile(await save(head, 'head.onnx'), feeds, 'extended');
    const got = await runFile(await save(tail, 'tail.onnx'), { [cut]: mid[cut]! }, 'extended');
    expect(plain(got.logits!)).toEqual(plain(want.logits!));
    expect(plain(got.mean!)).toEqual(plain(want.mean!));
  });

  it('refuses outputs not reachable from the inputs, and unknown names', async () => {
    const full = await readModel(fixture('tiny-2exit.onnx'));
    expect(() => extractSubgraph(full, ['/exit0/exit0.0/Flatten_output_0'], ['exit_1'])).toThrow(InputError);
    expect(() => extractSubgraph(full, ['/exit0/exit0.0/Flatten_output_0'], ['exit_1'])).toThrow(
      /output 'exit_1' is not reachable from inputs \['\/exit0\/exit0\.0\/Flatten_output_0'\]: it depends on graph input 'image', which is not among the given inputs/,
    );
    expect(() => extractSubgraph(full, ['image'], ['nope'])).toThrow(/tensor 'nope' not found in the graph/);
  });
});
