// What edgeexit knows about one ONNX op, in one record: how its output shapes follow from its
// inputs, how much work it does, what the float16 pass does with it and what role it plays in int8
// quantisation. Keeping the four together means adding an op is one entry, and a test can check
// that no op has one rule but not another.
import type { GraphNode } from '../graph.js';

export interface TensorShapeInfo {
  /** TensorProto.DataType number; 0 when unknown. */
  dtype: number;
  /** Concrete dims; undefined when unknown. */
  shape?: number[];
}

/** What a shape rule sees of one node while the graph is walked in topological order. */
export interface ShapeCtx {
  node: GraphNode;
  info(i: number): TensorShapeInfo | undefined;
  /** Shape of input i; throws a ShapeError when it is unknown or the input is missing. */
  shape(i: number): number[];
  /** Element type of input i, 0 when unknown. */
  dtype(i: number): number;
  /** Values of input i when it is a small constant. */
  value(i: number): number[] | undefined;
  /** Values of input i; throws a ShapeError naming `what` when they are not constant. */
  requireValue(i: number, what: string): number[];
  has(i: number): boolean;
  /** Record output i (values only when they are known and fit the shape). */
  set(i: number, dtype: number, shape: number[], values?: number[]): void;
}

/** Sets the node's outputs through `ctx.set`, or throws a ShapeError saying why it cannot. */
export type ShapeRule = (ctx: ShapeCtx) => void;

/**
 * Multiply-accumulates of one node from its input and output shapes; a string says why they
 * cannot be counted (a shape is unknown).
 */
export type MacRule = (node: GraphNode, input: (i: number) => number[] | undefined, output: number[] | undefined) => number | string;

export interface CostRule {
  /** 'macs': counted by `macs`; 'elementwise': one unit per output element; 'none': moves or describes data. */
  readonly work: 'macs' | 'elementwise' | 'none';
  /** Present exactly when work is 'macs'. */
  readonly macs?: MacRule;
  /** Inputs that carry shapes, axes or indices rather than weights (not counted as parameters). */
  readonly shapeInputs: readonly number[];
}

export interface Fp16Policy {
  /** What the float16 pass does with the op unless the caller passes its own block list. */
  readonly mode: 'convert' | 'keep-fp32';
  /** Why the op stays float32; present exactly when mode is 'keep-fp32'. */
  readonly reason?: string;
  /** Inputs that stay float32 even when the node is converted (Resize's scales). */
  readonly float32Inputs: readonly number[];
}

/**
 * The op's part in static int8 QDQ quantisation:
 * - 'weighted': quantised weights and activations (Conv, Gemm, MatMul);
 * - 'activation': computed on activations alone, with its own input and output ranges;
 * - 'pass-through': moves int8 codes without arithmetic, output shares the input's parameters;
 * - 'silent': stays float, and carries no arithmetic worth a warning;
 * - 'float': stays float with a warning.
 */
export type QuantRole = 'weighted' | 'activation' | 'pass-through' | 'silent' | 'float';

/** Everything edgeexit knows about one op of the default ONNX domain. */
export interface OpSpec {
  readonly op: string;
  /** null: no rule; the outputs stay unknown and the node is listed as unresolved. */
  readonly shape: ShapeRule | null;
  readonly cost: CostRule;
  readonly fp16: Fp16Policy;
  readonly quant: QuantRole;
}

/** Raised by shape rules; shape inference records it as an unresolved node instead of failing. */
export class ShapeError extends Error {}

// Common rule parts, shared by the op files.
export const ELEMENTWISE: CostRule = Object.freeze({ work: 'elementwise', shapeInputs: [] });
export const NO_WORK: CostRule = Object.freeze({ work: 'none', shapeInputs: [] });
export const CONVERT: Fp16Policy = Object.freeze({ mode: 'convert', float32Inputs: [] });

/** A cost rule for an op whose inputs at `slots` are shapes or axes. */
export function shapeSlots(work: 'elementwise' | 'none', slots: readonly number[]): CostRule {
  return Object.freeze({ work, shapeInputs: slots });
}

/** An fp16 policy that keeps the op float32, with the reason shown in the fp16 report. */
export function keepFp32(reason: string): Fp16Policy {
  return Object.freeze({ mode: 'keep-fp32', reason, float32Inputs: [] });
}
