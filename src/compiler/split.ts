// Cut a multi-exit model into one ONNX model per exit. onnxruntime runs every node of a session
// whatever outputs are fetched, so an early exit only saves time when the later layers live in
// another session: stage k computes exit k from what earlier stages handed over (or the image),
// plus the tensors later stages need.
//
// By default every node goes to the first stage whose exit needs it, so nothing is computed twice
// and the stages' MACs add up to the model's. A stage marked `recompute` hands nothing on: the
// next stage computes that trunk again from the image, which is cheaper than the hand-over when
// the stage is tiny (the per-run copy in and out of JS outweighs its MACs). The hand-over after stage k is exactly the set of tensors
// produced in stages ≤ k (or graph inputs) that nodes of later stages read; a tensor a stage does
// not read is carried past it by the runtime, not routed through the stage. Carried
// intermediate tensors get names that depend only on the graph's structure (`stage0/carry0`),
// so manifests stay comparable across re-exports that renumber torch's `onnx::Conv_123` names.
import path from 'node:path';
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
  /**
   * Stages (by index) that hand nothing on: the next stage recomputes what it needs of them from
   * the tensors before them (normally the image). Stage k then computes only its exit, so a sample
   * that leaves there skips the hand-over copy; samples that go on pay for stage k's trunk twice.
   * Worth it when stage k is tiny next to the per-run cost (see `chooseRecompute`). Never the last.
   */
  recompute?: readonly number[];
}

/**
 * Stages worth recomputing instead of handing over: a stage whose trunk — what the next stage
 * would compute again from the input, not its exit head, which is never recomputed — costs at
 * most `maxShare` of the whole model's MACs. `trunkMacs[k]` defaults to the whole stage.
 * On fmnist-branchy (x86, 1 thread, batch 1) stage 0's trunk has 2.5 % of the MACs, and the
 * copy of its hand-over in and out of JS costs more than computing it again.
 *
 * @example
 * ```ts
 * import { chooseRecompute } from 'edgeexit/compiler';
 * chooseRecompute([144_000, 2_000_000, 3_500_000]); // [0]: stage 0 is under 5 % of the MACs
 * chooseRecompute([340_000, 2_000_000, 3_500_000], 0.05, [144_000, 1_800_000, 3_500_000]); // [0]: its trunk is 2.5 %
 * ```
 */
export function chooseRecompute(stageMacs: readonly number[], maxShare = 0.05, trunkMacs: readonly number[] = stageMacs): number[] {
  const total = stageMacs.reduce((a, b) => a + b, 0);
  const out: number[] = [];
  for (let k = 0; k < stageMacs.length - 1; k++) if (total > 0 && trunkMacs[k]! / total <= maxShare) out.push(k);
  return out;
}

function list(names: readonly string[]): string {
  return names.map((n) => `'${n}'`).join(', ');
}

/**
 * The exits to split at: graph outputs in graph order, or the requested ones (checked).
 *
 * @example
 * ```ts
 * import { resolveExits } from 'edgeexit/compiler';
 * resolveExits(model); // every graph output, e.g. ['exit0', 'exit1', 'final']
 * resolveExits(model, ['exit1', 'final']); // checked: each must be a graph output
 * ```
 */
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

/**
 * Split `model` (normally a prepared one) into stages, one per exit.
 *
 * @example
 * ```ts
 * import { prepareModel, splitModel } from 'edgeexit/compiler';
 * const { stages } = splitModel(prepareModel(source).model, { exits: ['exit0', 'final'] });
 * console.log(stages.map((s) => [s.exit, s.inputs]));
 * ```
 */
export function splitModel(model: OnnxModel, opts: SplitOptions = {}): SplitResult {
  const exits = resolveExits(model, opts.exits);
  const src = model.source;
  const graph = OnnxGraph.of(model);
  const order = graph.topologicalOrder();
  const position = new Map<GraphNode, number>(order.map((n, i) => [n, i]));

  const last = exits.length - 1;
  const recompute = new Set(opts.recompute ?? []);
  for (const r of recompute) {
    if (!Number.isInteger(r) || r < 0 || r >= last) {
      throw new InputError(`recompute: stage ${r} cannot be recomputed; expected stage indices 0..${last - 1} (the last stage hands nothing on)`);
    }
  }

  // 1. Stage k runs what its exit needs that no handing-on earlier stage computed. A stage that
  //    hands nothing on (recompute) is invisible to later stages, so they compute its trunk again.
  const members: Set<GraphNode>[] = [];
  exits.forEach((exit, k) => {
    if (graph.isGraphInput(exit) || graph.isInitializer(exit)) {
      throw new UnsupportedError(`${src}: exit '${exit}' is a graph ${graph.isGraphInput(exit) ? 'input' : 'weight'}, not something the model computes; leave it out with --exits`);
    }
    const mine = new Set<GraphNode>();
    for (const n of graph.requiredNodes([exit])) if (!members.some((m, i) => !recompute.has(i) && m.has(n))) mine.add(n);
    if (mine.size === 0) {
      const earlier = exits.findIndex((e, j) => j < k && graph.requiredNodes([e]).some((n) => n.outputs.includes(exit)));
      throw new UnsupportedError(
        `${src}: exit '${exit}' adds no computation of its own: ${earlier >= 0 ? `stage ${earlier} (exit '${exits[earlier]}') already computes it` : 'earlier stages already compute it'}; ` +
          `drop it or reorder the exits with --exits (cheapest first)`,
      );
    }
    members.push(mine);
  });
  if (recompute.size === 0) {
    // Without recomputation nothing is computed twice; the split's invariant, checked cheaply.
    const seen = new Set<GraphNode>();
    for (const m of members) for (const n of m) {
      if (seen.has(n)) throw new Error(`internal: node '${n.name}' of ${src} planned in two stages`);
      seen.add(n);
    }
  }

  // 2. Where each stage's outside reads come from: the latest earlier stage that produces the
  //    tensor and hands on (-1: a graph input).
  const producedBy = members.map((m) => {
    const out = new Set<string>();
    for (const n of m) for (const o of n.outputs) if (o) out.add(o);
    return out;
  });
  const readersByStage = exits.map(() => new Set<string>());
  /** tensor → [source stage, reading stage] pairs. */
  const reads = new Map<string, [number, number][]>();
  members.forEach((m, k) => {
    for (const n of m) {
      for (const t of [...n.inputs, ...n.implicitInputs]) {
        if (!t || graph.isInitializer(t) || producedBy[k]!.has(t)) continue;
        let from = -1;
        for (let i = k - 1; i >= 0; i--) if (!recompute.has(i) && producedBy[i]!.has(t)) { from = i; break; }
        if (from === -1 && !graph.isGraphInput(t)) throw new Error(`internal: stage ${k} of ${src} reads '${t}', which no handing-on earlier stage produces`);
        readersByStage[k]!.add(t);
        reads.set(t, [...(reads.get(t) ?? []), [from, k]]);
      }
    }
  });
  /** First stage producing each tensor (for naming and ordering). */
  const producedIn = new Map<string, number>();
  producedBy.forEach((set, k) => { for (const t of set) if (!producedIn.has(t)) producedIn.set(t, k); });
  /** Alive after stage k: read later from a source at or before k. */
  const carriedAfter = (k: number): string[] => [...reads.entries()].filter(([, rs]) => rs.some(([from, at]) => from <= k && at > k)).map(([t]) => t);
  /** Handed on by stage k itself. */
  const handedOnBy = (k: number): string[] => [...reads.entries()].filter(([, rs]) => rs.some(([from]) => from === k)).map(([t]) => t);

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
    const carriedFromK = handedOnBy(k).filter((t) => !newName.has(t)).sort(byRank);
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
    const nodes = order.filter((n) => members[k]!.has(n));
    const inputs = [...readersByStage[k]!].sort(byRank);
    const carry = carriedAfter(k).sort(byRank);
    const handedOn = handedOnBy(k).filter((t) => t !== exit).sort(byRank);
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
      // The file name, not its path: a bundle names no folder of the machine it was compiled on.
      if (from) v.docString = `carried tensor; '${from}' in ${path.basename(src)}`;
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
