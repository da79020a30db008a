// The preprocess spec: how a bundle's (or a model's `edgeexit.preprocess` metadata's) images become
// the model's input tensor. Part of the bundle format, read by the compiler, the runtime and eval;
// the sharp adapter (backends/image.ts) carries it out.
import { ValidationError, show, type Problem } from '../util/errors.js';

export type ColorSpace = 'gray' | 'rgb';

/**
 * How an image is fitted to the model's input size. `stretch` ignores aspect ratio (right for
 * Fashion-MNIST-like inputs that are already square), `cover` scales then centre-crops,
 * `contain` scales then letterboxes with `background`.
 */
export type ResizePolicy = 'stretch' | 'cover' | 'contain';
export const RESIZE_POLICIES: readonly ResizePolicy[] = Object.freeze(['stretch', 'cover', 'contain']);

/**
 * Largest height or width of a model input. Bigger is no edge model, and a forged size such as
 * 100000×100000 would otherwise ask for a 40 GB tensor and die deep inside the image code.
 */
export const MAX_PREPROCESS_SIDE = 4096;

/** The model's `edgeexit.preprocess` metadata: x = (pixel × scale − mean[c]) / std[c], NCHW float32. */
export interface PreprocessSpec {
  colorspace: ColorSpace;
  /** [height, width], the order of the H and W axes of the NCHW input. */
  size: [number, number];
  scale: number;
  /** One value for every channel, or one per channel. */
  mean: number[];
  std: number[];
  /**
   * How images of another aspect ratio are fitted (default `stretch`, which is what bundles
   * without the key have always done).
   */
  resize?: ResizePolicy;
}

/**
 * Channels of a colour space: 1 for gray, 3 for rgb.
 *
 * @example
 * ```ts
 * import { channelsOf } from 'edgeexit/bundle';
 * channelsOf(manifest.input.preprocess.colorspace); // 1 for fmnist-branchy
 * ```
 */
export function channelsOf(colorspace: ColorSpace): number {
  return colorspace === 'gray' ? 1 : 3;
}

/**
 * Validate a preprocess spec (an object, or the JSON string stored in the model's metadata).
 *
 * @example
 * ```ts
 * import { parsePreprocessSpec } from 'edgeexit/bundle';
 * const spec = parsePreprocessSpec({ size: [28, 28], colorspace: 'gray', scale: 1 / 255, mean: [0.286], std: [0.353], resize: 'fill' });
 * ```
 */
export function parsePreprocessSpec(value: unknown, where = 'edgeexit.preprocess'): PreprocessSpec {
  let v = value;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch (err) {
      throw new ValidationError(where, [{ where, expected: 'JSON', got: show(value), message: (err as Error).message }]);
    }
  }
  const problems: Problem[] = [];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ValidationError(where, [{ where, expected: 'an object', got: show(v) }]);
  }
  const o = v as Record<string, unknown>;
  const colorspace = o.colorspace;
  if (colorspace !== 'gray' && colorspace !== 'rgb') {
    problems.push({ where: `${where}: colorspace`, expected: '"gray" or "rgb"', got: show(colorspace) });
  }
  const size = o.size;
  if (!Array.isArray(size) || size.length !== 2 || !size.every((n) => Number.isInteger(n) && n > 0 && n <= MAX_PREPROCESS_SIDE)) {
    problems.push({ where: `${where}: size`, expected: `[height, width] of integers from 1 to ${MAX_PREPROCESS_SIDE}`, got: show(size) });
  }
  if (typeof o.scale !== 'number' || !Number.isFinite(o.scale) || o.scale <= 0) {
    problems.push({ where: `${where}: scale`, expected: 'a positive number (e.g. 1/255)', got: show(o.scale) });
  }
  const channels = colorspace === 'rgb' ? 3 : 1;
  for (const key of ['mean', 'std'] as const) {
    const arr = o[key];
    const okLen = Array.isArray(arr) && (arr.length === 1 || arr.length === channels);
    if (!okLen || !(arr as unknown[]).every((n) => typeof n === 'number' && Number.isFinite(n))) {
      problems.push({
        where: `${where}: ${key}`,
        expected: `an array of 1${channels > 1 ? ` or ${channels}` : ''} finite numbers`,
        got: show(arr),
      });
    } else if (key === 'std' && (arr as number[]).some((n) => n === 0)) {
      problems.push({ where: `${where}: std`, expected: 'non-zero values (they divide)', got: show(arr) });
    }
  }
  if (o.resize !== undefined && !RESIZE_POLICIES.includes(o.resize as ResizePolicy)) {
    problems.push({ where: `${where}: resize`, expected: RESIZE_POLICIES.map((r) => `"${r}"`).join(', ') + ' (or leave it out for "stretch")', got: show(o.resize) });
  }
  if (problems.length > 0) throw new ValidationError(where, problems);
  return {
    colorspace: colorspace as ColorSpace,
    size: [(size as number[])[0]!, (size as number[])[1]!],
    scale: o.scale as number,
    mean: [...(o.mean as number[])],
    std: [...(o.std as number[])],
    // Only when given, so specs (and manifests) without it stay byte-identical.
    ...(o.resize !== undefined ? { resize: o.resize as ResizePolicy } : {}),
  };
}

