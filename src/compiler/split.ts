// Cut a multi-exit model into one ONNX model per exit. onnxruntime runs every node of a session
// whatever outputs are fetched, so an early exit only saves time when the later layers live in
// another session: stage k computes exit k from what earlier stages handed over (or the image),
// plus the tensors later stages need.
//
// Every node goes to the first stage whose exit needs it, so nothing is computed twice and the
// stages' MACs add up to the model's. The hand-over after stage k is exactly the set of tensors
// produced in stages ≤ k (or graph inputs) that nodes of later stages read; a tensor a stage does
// not read is carried past it by the runtime, not routed through the stage. Carried
// intermediate tensors get names that depend only on the graph's structure (`stage0/carry0`),
// so manifests stay comparable across re-exports that renumber torch's `onnx::Conv_123` names.
import { clone } from '@bufbuild/protobuf';
import { InputError, UnsupportedError } from '../util/errors.js';
import { OnnxGraph, OnnxModel, extractSubgraph, modelCost, type GraphNode } from '../onnx/index.js';
import { ModelProtoSchema } from '../onnx/gen/onnx_pb.js';
import { META_PREPROCESS } from '../model/describe.js';
import { canRename, renameTensor } from './graph-edit.js';

export interface StagePlan {
  index: number;
  /** The exit (graph output) this stage yields; always outputs[0]. */
  exit: string;
  /** Tensors the stage reads: graph inputs and tensors earlier stages produced. */
  inputs: string[];
  /** The exit, then the tensors this stage produces for later stages. */
  outputs: string[];
  /** Everything alive after this stage (the hand-over to later stages), in a stable order. */
  carry: string[];
  /** Node names of the original graph that this stage runs, in topological order. */
  nodes: string[];
  /** The stage as a standalone model. */
  model: OnnxModel;
  /** MACs per sample (batch 1). */
  macs: number;
}

export interface SplitResult {
  stages: StagePlan[];
  /** Carried tensors renamed to stable names: new name → name in the source model. */
  renamed: Record<string, string>;
}

export interface SplitOptions {
  /** Exits in stage order (default: every graph output, in graph order). */
  exits?: readonly string[];
}

function list(names: readonly string[]): string {
  return names.map((n) => `'${n}'`).join(', ');
}

/** The exits to split at: graph outputs in graph order, or the requested ones (checked). */
export function resolveExits(model: OnnxModel, requested?: readonly string[]): string[] {
  const outputs = model.graph.output.map((o) => o.name);
  if (outputs.length === 0) {
    throw new InputError(`${model.source}: the model has no outputs; expected one graph output per exit (export it with output_names=[...])`, [
      { where: model.source, expected: 'at least one graph output', got: 'none' },
    ]);
  }
  if (!requested || requested.length === 0) return outputs;
  const unknown = requested.filter((e) => !outputs.includes(e));
  if (unknown.length > 0) {
    throw new InputError(
      `--exits: ${unknown.length === 1 ? 'no output named' : 'no outputs named'} ${list(unknown)} in ${model.source}; the model's outputs are ${list(outputs)}`,
      unknown.map((u) => ({ where: '--exits', expected: `one of ${list(outputs)}`, got: `'${u}'` })),
    );
  }
  const dup = requested.find((e, i) => requested.indexOf(e) !== i);
  if (dup) throw new InputError(`--exits: '${dup}' is named twice; expected each exit once, in stage order`);
  return [...requested];
}

/** Split `model` (normally a prepared one) into stages, one per exit. */
export function splitModel(model: OnnxModel, opts: SplitOptions = {}): SplitResult {
  const exits = resolveExits(model, opts.exits);
  const src = model.source;
  const graph = OnnxGraph.of(model);
  const order = graph.topologicalOrder();
  const position = new Map<GraphNode, number>(order.map((n, i) => [n, i]));

  // 1. Each node goes to the first stage whose exit needs it.
  const stageOf = new Map<GraphNode, number>();
  exits.forEach((exit, k) => {
    if (graph.isGraphInput(exit) || graph.isInitializer(exit)) {
      throw new UnsupportedError(`${src}: exit '${exit}' is a graph ${graph.isGraphInput(exit) ? 'input' : 'weight'}, not something the model computes; leave it out with --exits`);
    }
    let fresh = 0;
    for (const n of graph.requiredNodes([exit])) {
      if (!stageOf.has(n)) {
        stageOf.set(n, k);
        fresh++;
      }
    }
    if (fresh === 0) {
      const earlier = exits.findIndex((e, j) => j < k && graph.requiredNodes([e]).some((n) => n.outputs.includes(exit)));
      throw new UnsupportedError(
        `${src}: exit '${exit}' adds no computation of its own: ${earlier >= 0 ? `stage ${earlier} (exit '${exits[earlier]}') already computes it` : 'earlier stages already compute it'}; ` +
          `drop it or reorder the exits with --exits (cheapest first)`,
      );
    }
  });

  // 2. Who produces and who reads each tensor, by stage.
  const producedIn = new Map<string, number>();
  for (const [n, k] of stageOf) for (const o of n.outputs) if (o) producedIn.set(o, k);
  const lastReader = new Map<string, number>();
  const readersByStage = exits.map(() => new Set<string>());
  for (const [n, k] of stageOf) {
    for (const t of [...n.inputs, ...n.implicitInputs]) {
      if (!t || graph.isInitializer(t)) continue;
      if ((producedIn.get(t) ?? -1) === k) continue;
      readersByStage[k]!.add(t);
      lastReader.set(t, Math.max(lastReader.get(t) ?? -1, k));
    }
  }

  // Stable order: graph inputs first (graph order), then by producing node's position and output slot.
  const rank = (t: string): [number, number, number] => {
    const gi = graph.inputNames.indexOf(t);
    if (gi >= 0) return [-1, gi, 0];
    const p = graph.producer(t)!;
    return [producedIn.get(t)!, position.get(p)!, p.outputs.indexOf(t)];
  };
  const byRank = (a: string, b: string) => {
    const ra = rank(a);
    const rb = rank(b);
    return ra[0] - rb[0] || ra[1] - rb[1] || ra[2] - rb[2];
  };

  // 3. Stable names for carried intermediate tensors (not graph inputs, not exits).
  const proto = clone(ModelProtoSchema, model.proto);
  const work = new OnnxModel(proto, src, model.baseDir);
  const renamed: Record<string, string> = {};
  const newName = new Map<string, string>();
  const taken = graph.tensorNames();
  exits.forEach((_, k) => {
    const carriedFromK = [...lastReader.keys()].filter((t) => producedIn.get(t) === k && lastReader.get(t)! > k).sort(byRank);
    let i = 0;
    for (const t of carriedFromK) {
      if (exits.includes(t) || graph.outputNames.includes(t) || !canRename(graph, t)) continue;
      let name = `stage${k}/carry${i++}`;
      while (taken.has(name)) name = `stage${k}/carry${i++}`;
      taken.add(name);
      renameTensor(proto.graph!, t, name);
      const info = proto.graph!.valueInfo.find((v) => v.name === name);
      if (info) info.docString = `'${t}' in ${src}`;
      renamed[name] = t;
      newName.set(t, name);
    }
  });
  const nameOf = (t: string) => newName.get(t) ?? t;

  // 4. Cut.
  const stages: StagePlan[] = exits.map((exit, k) => {
    const nodes = order.filter((n) => stageOf.get(n) === k);
    const inputs = [...readersByStage[k]!].sort(byRank);
    const carry = [...lastReader.keys()].filter((t) => (producedIn.get(t) ?? -1) <= k && lastReader.get(t)! > k).sort(byRank);
    const handedOn = carry.filter((t) => producedIn.get(t) === k && t !== exit);
    const outputs = [exit, ...handedOn];
    const stage = extractSubgraph(work, inputs.map(nameOf), outputs.map(nameOf), { graphName: `${proto.graph!.name || 'model'}_stage${k}` });
    const extracted = stage.graph.node.length;
    if (extracted !== nodes.length) {
      // extractSubgraph walks back from the outputs; by construction it finds exactly this stage's nodes.
      throw new Error(`internal: stage ${k} of ${src} extracted ${extracted} nodes, planned ${nodes.length}`);
    }
    stage.setMetadata('edgeexit.stage', JSON.stringify({ index: k, of: exits.length, exit }));
    // The preprocessing describes the image; a stage fed only with carried tensors does not read it.
    if (!inputs.some((t) => graph.isGraphInput(t))) stage.setMetadata(META_PREPROCESS, undefined);
    for (const v of stage.graph.output) {
      const from = renamed[v.name];
      if (from) v.docString = `carried tensor; '${from}' in ${src}`;
    }
    return {
      index: k,
      exit,
      inputs: inputs.map(nameOf),
      outputs: outputs.map(nameOf),
      carry: carry.map(nameOf),
      nodes: nodes.map((n) => n.name),
      model: new OnnxModel(stage.proto, `${src} stage ${k}`, model.baseDir),
      macs: modelCost(stage).macs,
    };
  });
  return { stages, renamed };
}
