// The op table: one OpSpec per op of the default ONNX domain that edgeexit has any rule for.
// Shape inference, cost, the float16 pass and the int8 quantiser all read it; an op that is not
// here gets the defaults (no shape rule, elementwise work, converted to float16, stays float in
// int8 with a warning).
import { ELEMENTWISE_OPS } from './elementwise.js';
import { LAYOUT_OPS } from './layout.js';
import { LINEAR_OPS } from './linear.js';
import { POOL_OPS } from './pool.js';
import { QUANTIZATION_OPS } from './quantization.js';
import { REDUCE_OPS } from './reduce.js';
import { SAMPLING_OPS } from './sampling.js';
import type { OpSpec, QuantRole } from './spec.js';

export type { OpSpec, ShapeRule, ShapeCtx, MacRule, CostRule, Fp16Policy, QuantRole, TensorShapeInfo } from './spec.js';
export { ShapeError } from './spec.js';

function table(groups: readonly (readonly OpSpec[])[]): ReadonlyMap<string, OpSpec> {
  const out = new Map<string, OpSpec>();
  for (const spec of groups.flat()) {
    // Two entries for one op would make the answer depend on file order.
    if (out.has(spec.op)) throw new Error(`src/onnx/ops: op '${spec.op}' has two entries; keep one (merge their rules)`);
    out.set(spec.op, Object.freeze(spec));
  }
  return out;
}

/**
 * Every op edgeexit has rules for, by op type (default ONNX domain only).
 *
 * @example
 * const conv = OPS.get('Conv')!;
 * conv.cost.work; // 'macs'
 * conv.quant;     // 'weighted'
 */
export const OPS: ReadonlyMap<string, OpSpec> = table([LINEAR_OPS, ELEMENTWISE_OPS, POOL_OPS, REDUCE_OPS, LAYOUT_OPS, QUANTIZATION_OPS, SAMPLING_OPS]);

/**
 * The op's entry, or undefined for ops of other domains and ops the table does not know.
 *
 * @example
 * opSpec(node.domain, node.opType)?.shape?.(ctx);
 */
export function opSpec(domain: string, opType: string): OpSpec | undefined {
  return domain === '' ? OPS.get(opType) : undefined;
}

/**
 * Op types with the given int8 role, in table order.
 *
 * @example
 * const weighted = opsWithQuantRole('weighted'); // Set { 'Conv', 'Gemm', 'MatMul' }
 */
export function opsWithQuantRole(role: QuantRole): ReadonlySet<string> {
  return new Set([...OPS.values()].filter((s) => s.quant === role).map((s) => s.op));
}

/**
 * Ops the float16 pass keeps float32 by default, with the reason for each.
 *
 * @example
 * fp16KeepReasons().Resize; // 'sampling coordinates lose precision …'
 */
export function fp16KeepReasons(): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const s of OPS.values()) if (s.fp16.mode === 'keep-fp32') out[s.op] = s.fp16.reason!;
  return Object.freeze(out);
}
