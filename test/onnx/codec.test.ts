// Decoding bad input (missing, empty, truncated, non-ONNX files) gives the right error class and a
// message that names the file; unknown fields and enum values newer than our schema survive
// decode → encode untouched.
import { create, isFieldSet, toBinary } from '@bufbuild/protobuf';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, OnnxFormatError } from '../../src/util/errors.js';
import { AttributeProtoSchema, ModelProtoSchema, OperatorSetIdProtoSchema } from '../../src/onnx/gen/onnx_pb.js';
import { decodeModel, encodeModel, readModel, writeModel } from '../../src/onnx/index.js';
import { WireType, encodeField, scanFields, type WireField } from '../../src/onnx/wire.js';
import { fixture, plain, randomFeeds, runFile, tempDir } from './helpers.js';

let tmp: string;
let tiny: Uint8Array;
beforeAll(async () => {
  tmp = await tempDir();
  tiny = new Uint8Array(await fsp.readFile(fixture('tiny-2exit.onnx')));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function readError(name: string, bytes: Uint8Array | string): Promise<Error> {
  const file = path.join(tmp, name);
  await fsp.writeFile(file, bytes);
  const err = await readModel(file).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message.startsWith(file + ':')).toBe(true);
  return err as Error;
}

const PNG = Uint8Array.from([
  0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
  0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63,
  0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60,
  0x82,
]);

describe('bad input', () => {
  it('missing file → InputError naming the file', async () => {
    const file = path.join(tmp, 'nope.onnx');
    const err = await readModel(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err).not.toBeInstanceOf(OnnxFormatError);
    expect((err as Error).message).toBe(`${file}: no such file; expected an ONNX model file (.onnx)`);
  });

  it('a directory → InputError', async () => {
    const err = await readModel(tmp).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/is a directory/);
  });

  it('empty file → OnnxFormatError', async () => {
    const err = await readError('empty.onnx', new Uint8Array());
    expect(err).toBeInstanceOf(OnnxFormatError);
    expect(err.message).toMatch(/empty\.onnx: empty file \(0 bytes\); expected a ModelProto as written by torch\.onnx\.export or onnx\.save/);
  });

  it.each([0.3, 0.6, 0.95, 0.999])('truncated file (%s of it) → OnnxFormatError with the byte offset', async (share) => {
    const cut = Math.floor(tiny.length * share);
    const err = await readError(`cut-${share}.onnx`, tiny.subarray(0, cut));
    expect(err).toBeInstanceOf(OnnxFormatError);
    expect(err.message).toMatch(/truncated or damaged ONNX model \(protobuf decode failed at byte \d+ in (graph|metadata_props)/);
    expect(err.message).toContain(`the file is ${cut} bytes`);
  });

  it('PNG → not an ONNX model, looks like a PNG', async () => {
    const err = await readError('picture.onnx', PNG);
    expect(err).toBeInstanceOf(OnnxFormatError);
    expect(err.message).toMatch(/picture\.onnx: not an ONNX model \(protobuf decode failed at byte \d+: .*\); expected a ModelProto .*; the file looks like a PNG image/);
  });

  it('text file → not an ONNX model, looks like text', async () => {
    const err = await readError('notes.onnx', 'This is not a model.\nJust some notes about models.\n');
    expect(err).toBeInstanceOf(OnnxFormatError);
    expect(err.message).toMatch(/notes\.onnx: not an ONNX model .*looks like a text file/);
  });

  it('text that happens to decode as protobuf is still refused', async () => {
    // 'H' is the tag of field 9 as a varint and 'i' a valid varint: well-formed protobuf, but no ModelProto field.
    const err = await readError('hi.onnx', 'Hi');
    expect(err).toBeInstanceOf(OnnxFormatError);
    expect(err.message).toMatch(/hi\.onnx: not an ONNX model \(it decodes as protobuf but has none of the ModelProto fields\).*text file/);
  });

  it('a ZIP (PyTorch checkpoint) gets a hint', async () => {
    const err = await readError('model.pt', Uint8Array.from([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 8, 0, 1, 2, 3, 4]));
    expect(err).toBeInstanceOf(OnnxFormatError);
    expect(err.message).toMatch(/ZIP archive.*torch\.onnx\.export/);
  });

  it('ModelProto without ir_version, without graph, without opset_import', async () => {
    const noIr = toBinary(ModelProtoSchema, create(ModelProtoSchema, { producerName: 'x' }));
    expect((await readError('no-ir.onnx', noIr)).message).toMatch(/ir_version \(field 1\) is missing/);

    const noGraph = toBinary(
      ModelProtoSchema,
      create(ModelProtoSchema, { irVersion: 8n, opsetImport: [create(OperatorSetIdProtoSchema, { version: 13n })] }),
    );
    const e2 = await readError('no-graph.onnx', noGraph);
    expect(e2).toBeInstanceOf(OnnxFormatError);
    expect(e2.message).toMatch(/no-graph\.onnx: ONNX model without a graph \(the ModelProto has no graph \(field 7\)\)/);

    const model = decodeModel(tiny);
    model.proto.opsetImport = [];
    const e3 = await readError('no-opset.onnx', toBinary(ModelProtoSchema, model.proto));
    expect(e3.message).toMatch(/no-opset\.onnx: ONNX model \(IR 7\) has no opset_import/);
  });

  it('decodeModel without a source says <bytes>', () => {
    expect(() => decodeModel(new Uint8Array([1, 2, 3]))).toThrow(/^<bytes>: not an ONNX model/);
  });
});

/** Rebuild `bytes` with `extra` appended inside the first LEN field found along `path` (fixing lengths on the way). */
function inject(bytes: Uint8Array, path: number[], extra: Uint8Array): Uint8Array {
  if (path.length === 0) return Buffer.concat([bytes, extra]);
  const { fields, problem } = scanFields(bytes);
  expect(problem).toBeUndefined();
  const f = fields.find((x) => x.no === path[0] && x.wireType === WireType.LEN)!;
  const inner = inject(bytes.subarray(f.valueStart, f.end), path.slice(1), extra);
  return Buffer.concat([bytes.subarray(0, f.start), encodeField(path[0]!, WireType.LEN, inner), bytes.subarray(f.end)]);
}

/** Fields of the message found by following `path` (first occurrence of each field number). */
function fieldsAt(bytes: Uint8Array, path: number[]): { fields: WireField[]; bytes: Uint8Array } {
  let cur = bytes;
  for (const no of path) {
    const f = scanFields(cur).fields.find((x) => x.no === no && x.wireType === WireType.LEN)!;
    cur = cur.subarray(f.valueStart, f.end);
  }
  return { fields: scanFields(cur).fields, bytes: cur };
}

describe('unknown fields', () => {
  it('survive decode → encode at the top level, in the graph, a node, an initializer and an attribute', async () => {
    let bytes: Uint8Array = tiny;
    bytes = inject(bytes, [], encodeField(999, WireType.VARINT, 123456789n));
    bytes = inject(bytes, [], encodeField(1000, WireType.LEN, new TextEncoder().encode('future metadata')));
    bytes = inject(bytes, [7], encodeField(777, WireType.VARINT, 42));
    bytes = inject(bytes, [7, 1], encodeField(555, WireType.LEN, Uint8Array.from([1, 2, 3])));
    bytes = inject(bytes, [7, 5], encodeField(20, WireType.VARINT, 7));
    // An AttributeType from the future (99): our proto2 enum is closed, so it is kept as an unknown field.
    bytes = inject(bytes, [7, 1, 5], encodeField(20, WireType.VARINT, 99));

    const model = decodeModel(bytes);
    const out = encodeModel(model);
    // protobuf-es writes unknown fields after the known ones, where we put them: identical bytes.
    expect(Buffer.compare(Buffer.from(out), Buffer.from(bytes))).toBe(0);

    const top = scanFields(out).fields;
    expect(top.some((f) => f.no === 999)).toBe(true);
    const text = top.find((f) => f.no === 1000)!;
    expect(new TextDecoder().decode(out.subarray(text.valueStart, text.end))).toBe('future metadata');
    expect(fieldsAt(out, [7]).fields.some((f) => f.no === 777)).toBe(true);
    const node = fieldsAt(out, [7, 1]);
    const f555 = node.fields.find((f) => f.no === 555)!;
    expect([...node.bytes.subarray(f555.valueStart, f555.end)]).toEqual([1, 2, 3]);
    expect(fieldsAt(out, [7, 5]).fields.filter((f) => f.no === 20)).toHaveLength(1);
    const attr = fieldsAt(out, [7, 1, 5]);
    const types = attr.fields.filter((f) => f.no === 20).map((f) => attr.bytes[f.valueStart]);
    expect(types.at(-1)).toBe(99);

    // And the rewritten file still runs the same under onnxruntime.
    const file = path.join(tmp, 'unknown.onnx');
    await writeModel(model, file);
    const original = path.join(tmp, 'original.onnx');
    await fsp.writeFile(original, tiny);
    const feeds = randomFeeds(model, 5);
    const [a, b] = [await runFile(original, feeds), await runFile(file, feeds)];
    for (const k of Object.keys(a)) expect(plain(b[k]!)).toEqual(plain(a[k]!));
  });
});

describe('field presence', () => {
  it('keeps a scalar that was written with its default value, and does not invent absent ones', () => {
    // AttributeProto { name: 'alpha', type: FLOAT, f: 0.0 }: f is present although zero.
    const attr = Uint8Array.from([0x0a, 0x05, ...new TextEncoder().encode('alpha'), 0x15, 0, 0, 0, 0, 0xa0, 0x01, 0x01]);
    const model = decodeModel(tiny);
    const bn = model.graph.node.find((n) => n.opType === 'BatchNormalization')!;
    // Append the attribute to the first node (a Conv) and check it survives byte for byte.
    const bytes = inject(tiny, [7, 1], encodeField(5, WireType.LEN, attr));
    const decoded = decodeModel(bytes);
    const a = decoded.graph.node[0]!.attribute.at(-1)!;
    expect(isFieldSet(a, AttributeProtoSchema.field.f)).toBe(true);
    expect(isFieldSet(a, AttributeProtoSchema.field.i)).toBe(false);
    expect(Buffer.compare(Buffer.from(encodeModel(decoded)), Buffer.from(bytes))).toBe(0);
    // torch does not write model_version or domain; re-encoding must not add them.
    expect(isFieldSet(model.proto, ModelProtoSchema.field.modelVersion)).toBe(false);
    expect(scanFields(encodeModel(model)).fields.map((f) => f.no)).not.toContain(5);
    expect(bn.attribute.map((x) => x.name)).toEqual(['epsilon', 'momentum']);
  });
});

describe('model accessors', () => {
  it('reads ir_version, opsets, producer and metadata, and edits metadata', async () => {
    const model = await readModel(fixture('tiny-2exit.onnx'));
    expect(model.irVersion).toBe(7);
    expect(model.opsetImports).toEqual([{ domain: '', version: 13 }]);
    expect(model.opsetVersion()).toBe(13);
    expect(model.opsetVersion('ai.onnx')).toBe(13);
    expect(model.opsetVersion('com.microsoft')).toBeUndefined();
    expect(model.producerName).toBe('pytorch');
    expect(model.getMetadata('edgeexit.fixture')).toBe('tiny-2exit.onnx');

    model.setMetadata('edgeexit.exits', '2');
    model.setMetadata('edgeexit.fixture', undefined);
    model.setOpsetVersion('com.microsoft', 1);
    const file = path.join(tmp, 'meta.onnx');
    await writeModel(model, file);
    const back = await readModel(file);
    expect(back.metadata).toEqual({ 'edgeexit.exits': '2' });
    expect(back.opsetVersion('com.microsoft')).toBe(1);
  });
});
