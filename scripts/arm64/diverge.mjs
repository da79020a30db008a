// Where x86 and Arm int8 results first part: runs every stage file of a bundle with each
// QuantizeLinear output (the tensor a fused int8 op such as QLinearConv writes) exposed as a graph
// output, in graph order, and dumps them; `--compare` names the first tensor that differs and the
// op that produced it. Exposing Q outputs keeps onnxruntime's QDQ fusions (only DequantizeLinear
// outputs must stay internal), so these are the values the fused int8 kernels wrote.
//   node diverge.mjs dump <bundle> <test:N | calibration:N> <out.json>
//   node diverge.mjs compare <x64.json> <arm64.json>
// Run `dump` under x86 Node and under scripts/arm64/run.sh with the same arguments.
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { decodeModel, encodeModel, DataType } from '../../dist/onnx/index.js';
import { TypeProtoSchema, TypeProto_TensorSchema, ValueInfoProtoSchema } from '../../dist/onnx/gen/onnx_pb.js';
import { createSession } from '../../dist/backends/onnxruntime.js';
import { loadFashionMnist } from '../../dist/data/idx.js';
import { scanImageFolder } from '../../dist/data/imagefolder.js';
import { decodeImage, toTensor } from '../../dist/backends/image.js';

async function images(manifest, source) {
  const spec = manifest.input.preprocess;
  const n = Number(source.split(':')[1] ?? 16);
  if (source.startsWith('test')) {
    const fm = await loadFashionMnist('test');
    const per = fm.images.rows * fm.images.cols;
    const px = Array.from({ length: n }, (_, i) => ({ data: fm.images.pixels.subarray(i * per, (i + 1) * per), width: fm.images.cols, height: fm.images.rows, channels: 1 }));
    return toTensor(px, spec);
  }
  const folder = await scanImageFolder(path.resolve(import.meta.dirname, '../../calibration/fashion-mnist'), { labels: manifest.labels });
  const step = folder.items.length / n;
  const opts = { colorspace: spec.colorspace, width: spec.size[1], height: spec.size[0] };
  const px = [];
  for (let i = 0; i < n; i++) px.push(await decodeImage(folder.items[Math.floor(i * step)].file, opts));
  return toTensor(px, spec);
}

/** The stage with every QuantizeLinear output added to the graph outputs (typed by its zero point). */
function exposeQuantized(bytes) {
  const model = decodeModel(bytes, '<stage>');
  const g = model.proto.graph;
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const have = new Set(g.output.map((o) => o.name));
  const producer = new Map();
  const tensors = [];
  for (const node of g.node) {
    for (const o of node.output) producer.set(o, node);
    if (node.opType !== 'QuantizeLinear') continue;
    const t = node.output[0];
    const zp = inits.get(node.input[2]);
    const elemType = zp ? zp.dataType : DataType.UINT8;
    const op = producer.get(node.input[0]);
    tensors.push({ tensor: t, op: op ? `${op.opType} ${op.name}` : `input ${node.input[0]}` });
    if (have.has(t)) continue;
    have.add(t);
    g.output.push(create(ValueInfoProtoSchema, { name: t, type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType }) } }) }));
  }
  for (const o of g.output) if (!tensors.some((x) => x.tensor === o.name)) tensors.push({ tensor: o.name, op: `${producer.get(o.name)?.opType ?? '?'} ${producer.get(o.name)?.name ?? ''} (stage output)` });
  return { bytes: encodeModel(model), tensors };
}

async function runStage(bundle, stage, feeds) {
  const { bytes, tensors } = exposeQuantized(readFileSync(path.join(bundle, stage.file)));
  const session = await createSession(bytes, { graphOptimizationLevel: 'all', intraOpNumThreads: 1 });
  try {
    const out = await session.run(feeds);
    return { outputs: out, tensors: tensors.map((t) => ({ ...t, data: Array.from(out[t.tensor].data, Number) })) };
  } finally {
    await session.close();
  }
}

async function dump(bundle, source, outFile) {
  const manifest = JSON.parse(readFileSync(path.join(bundle, 'manifest.json'), 'utf8'));
  const image = await images(manifest, source);
  const runs = [];
  const pool = { [manifest.input.name]: image };
  const plan = manifest.kind === 'cbnet'
    ? [[0, { [manifest.stages[0].inputs[0]]: 'image' }, 'converter'], [1, { [manifest.stages[1].inputs[0]]: 'image' }, 'classifier<-image'], [1, { [manifest.stages[1].inputs[0]]: 'converted' }, 'classifier<-converter']]
    : manifest.stages.map((s, k) => [k, Object.fromEntries(s.inputs.map((i) => [i, i])), s.file]);
  for (const [k, inputs, name] of plan) {
    const feeds = Object.fromEntries(Object.entries(inputs).map(([input, from]) => [input, pool[from]]));
    const r = await runStage(bundle, manifest.stages[k], feeds);
    for (const [n, t] of Object.entries(r.outputs)) if (t.type === 'float32') pool[n] = { data: t.data, dims: t.dims };
    runs.push({ run: name, file: manifest.stages[k].file, tensors: r.tensors });
  }
  writeFileSync(`${outFile}.tmp`, JSON.stringify({ bundle: path.basename(bundle), arch: process.arch, source, runs }));
  renameSync(`${outFile}.tmp`, outFile);
}

function compare(a, b) {
  const x = JSON.parse(readFileSync(a, 'utf8'));
  const y = JSON.parse(readFileSync(b, 'utf8'));
  let first = null;
  let differing = 0;
  let total = 0;
  const outputs = [];
  for (const [i, run] of x.runs.entries()) {
    for (const [j, t] of run.tensors.entries()) {
      const u = y.runs[i].tensors[j].data;
      let n = 0;
      let max = 0;
      t.data.forEach((v, e) => { const d = Math.abs(v - u[e]); if (d > 0) { n++; max = Math.max(max, d); } });
      total++;
      if (t.op.endsWith('(stage output)')) outputs.push(`${t.tensor} ${n ? `differs (${n} elements, max |Δ| ${max.toPrecision(3)})` : 'identical'}`);
      if (!n) continue;
      differing++;
      first ??= `run ${run.run} (${run.file}), tensor ${t.tensor} written by ${t.op}: ${n} of ${t.data.length} elements, max |Δ| ${max}`;
    }
  }
  const head = first
    ? `first difference (${x.arch} vs ${y.arch}, ${x.source}): ${first}; ${differing} of ${total} tensors differ`
    : `no difference (${x.arch} vs ${y.arch}, ${x.source}): ${total} tensors over ${x.runs.length} stage runs identical element for element`;
  console.log(`${head}; stage outputs: ${outputs.join(', ')}`);
  return first ? 1 : 0;
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'dump' && rest.length === 3) await dump(...rest);
else if (mode === 'compare' && rest.length === 2) process.exitCode = compare(...rest);
else {
  console.error('diverge.mjs: usage: diverge.mjs dump <bundle> <test:N | calibration:N> <out.json> | compare <x64.json> <arm64.json>');
  process.exitCode = 64;
}
