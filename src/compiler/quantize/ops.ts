// Which ONNX ops the int8 QDQ pass knows, and how: ops with weights (Conv, Gemm, MatMul) get
// quantised weights and activations; ops computed on activations alone (Add, average pools) get
// their own input and output ranges; pass-through ops (MaxPool, Relu, Flatten, Reshape, …) move
// int8 values without arithmetic, so onnxruntime keeps them in the quantised domain with the
// output sharing the input's scale and zero-point. The same tables tell the calibrator which
// tensors need ranges.
import { DataType, OnnxGraph, opsWithQuantRole, type OnnxModel, type GraphNode } from '../../onnx/index.js';

// The roles live in the op table (src/onnx/ops), next to each op's shape and cost rules.
export const WEIGHTED_OPS = opsWithQuantRole('weighted');
export const ACTIVATION_OPS = opsWithQuantRole('activation');
export const PASS_THROUGH_OPS = opsWithQuantRole('pass-through');
/** Ops that carry no arithmetic worth a warning when they stay float. */
export const SILENT_OPS = opsWithQuantRole('silent');

export function isQuantisableOp(op: string): boolean {
  return WEIGHTED_OPS.has(op) || ACTIVATION_OPS.has(op) || PASS_THROUGH_OPS.has(op);
}

/** The activation inputs of a node that the QDQ pass quantises (never weights or shapes). */
export function activationInputs(graph: OnnxGraph, n: GraphNode): string[] {
  if (n.domain !== '') return [];
  switch (n.opType) {
    case 'Conv':
    case 'Gemm':
    case 'MatMul':
      // Gemm/MatMul read an activation as B too when it is not a weight.
      return [n.inputs[0]!, ...(n.opType !== 'Conv' && n.inputs[1] && !graph.isInitializer(n.inputs[1]) ? [n.inputs[1]] : [])].filter((t) => t && !graph.isInitializer(t));
    case 'Add':
      return n.inputs.slice(0, 2).filter((t) => t && !graph.isInitializer(t));
    default:
      return isQuantisableOp(n.opType) && n.inputs[0] && !graph.isInitializer(n.inputs[0]) ? [n.inputs[0]] : [];
  }
}

function isFloat(graph: OnnxGraph, t: string): boolean {
  const v = graph.valueInfo(t);
  const tt = v?.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  // Unknown types are activations of float models in practice; onnxruntime tells us otherwise.
  return tt === undefined || tt.elemType === DataType.FLOAT;
}

/** Every activation a quantisable node reads or writes: what calibration must measure. */
export function calibrationTensors(model: OnnxModel): string[] {
  const graph = OnnxGraph.of(model);
  const out = new Set<string>();
  for (const n of graph.topologicalOrder()) {
    if (n.domain !== '' || !isQuantisableOp(n.opType)) continue;
    for (const t of activationInputs(graph, n)) if (isFloat(graph, t)) out.add(t);
    const o = n.outputs[0];
    if (o && isFloat(graph, o)) out.add(o);
  }
  return [...out];
}
