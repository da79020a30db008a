// The one adapter between edgeexit and sharp: every image decode, colour conversion and resize
// goes through here, so sharp's global settings and its error strings stay in one place. The
// pixel → tensor step (`toTensor`) is pure and sharp-free, so IDX data and raw buffers share the
// exact arithmetic that decoded images get.
//
// PNGs that are already the model's size skip sharp (see png.ts for why): the few colour steps
// such a file can still need (alpha flattening, gray ↔ RGB) are done here with sharp's exact
// integer results, checked against sharp in the tests; anything else still goes to sharp.
import { promises as fsp, readFileSync, statSync } from 'node:fs';
import type { Sharp, default as SharpFactory } from 'sharp';
import { PngFormatError, decodePng, isPng, readPng, type PngPixels } from './png.js';
import { InputError, formatProblem, show, type Problem } from '../util/errors.js';
import { channelsOf, type ColorSpace, type PreprocessSpec, type ResizePolicy } from '../bundle/preprocess.js';

export { RESIZE_POLICIES, channelsOf, parsePreprocessSpec, type ColorSpace, type PreprocessSpec, type ResizePolicy } from '../bundle/preprocess.js';

/** Interleaved (HWC) 8-bit pixels, as sharp's raw output and IDX files lay them out. */
export interface RawPixels {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/** A plain float32 tensor (no onnxruntime types). */
export interface TensorData {
  data: Float32Array;
  dims: number[];
}

/**
 * What can be fed to the model: a file path, encoded bytes (PNG/JPEG/WebP), raw pixels, or a
 * tensor that was already preprocessed (passed through after a shape check). `name` labels
 * the item in errors.
 */
export type ImageInput =
  | string
  | Uint8Array
  | { kind: 'encoded'; bytes: Uint8Array; name?: string }
  | { kind: 'raw'; pixels: RawPixels; name?: string }
  | { kind: 'tensor'; tensor: TensorData; name?: string };

export interface DecodeOptions {
  colorspace: ColorSpace;
  width: number;
  height: number;
  resize?: ResizePolicy;
  /** Letterbox colour for `contain`, and what transparent pixels are flattened onto. Default black. */
  background?: { r: number; g: number; b: number };
}

/** One item of a batch: the value, or the error that made it unusable. */
export type ItemResult<T> = { ok: true; value: T } | { ok: false; name: string; error: InputError };

// ---------------------------------------------------------------------------------------------
// Pixels → tensor (pure)

// Per-channel lookup tables: 8-bit input has only 256 values, so (p × scale − mean) / std is
// computed once per value in double precision. A table read measured as fast as a per-pixel
// multiply-add (~1.6 µs per 28×28 image) and 15% faster than the division, and it is exactly
// the rounded value of the formula whatever the spec. Specs are treated as immutable.
const lutCache = new WeakMap<PreprocessSpec, Float32Array[]>();
function lutsFor(spec: PreprocessSpec): Float32Array[] {
  let luts = lutCache.get(spec);
  if (!luts) {
    const c = channelsOf(spec.colorspace);
    luts = [];
    for (let ch = 0; ch < c; ch++) {
      const mean = spec.mean.length === 1 ? spec.mean[0]! : spec.mean[ch]!;
      const std = spec.std.length === 1 ? spec.std[0]! : spec.std[ch]!;
      const lut = new Float32Array(256);
      for (let p = 0; p < 256; p++) lut[p] = (p * spec.scale - mean) / std;
      luts.push(lut);
    }
    lutCache.set(spec, luts);
  }
  return luts;
}

function checkPixels(px: RawPixels, spec: PreprocessSpec, name: string): void {
  const [h, w] = spec.size;
  const c = channelsOf(spec.colorspace);
  if (px.width !== w || px.height !== h || px.channels !== c) {
    throw new InputError(
      formatProblem({
        where: name,
        message: 'pixels do not match the model input',
        expected: `${w}×${h}×${c} (${spec.colorspace})`,
        got: `${px.width}×${px.height}×${px.channels}`,
        fix: 'decode it with decodeImage()/prepareBatch() so it is converted and resized first',
      }),
    );
  }
  if (px.data.length !== w * h * c) {
    throw new InputError(`${name}: expected ${w * h * c} pixel bytes for ${w}×${h}×${c}, got ${px.data.length}`);
  }
}

/**
 * Write one image's normalised pixels, as CHW, into `out` starting at `offset`. Lets batch
 * builders fill one preallocated buffer instead of concatenating per-image tensors.
 */
export function toTensorInto(px: RawPixels, spec: PreprocessSpec, out: Float32Array, offset: number, name = 'image'): void {
  checkPixels(px, spec, name);
  const luts = lutsFor(spec);
  const plane = px.width * px.height;
  const c = px.channels;
  const src = px.data;
  if (c === 1) {
    const lut = luts[0]!;
    for (let i = 0; i < plane; i++) out[offset + i] = lut[src[i]!]!;
    return;
  }
  for (let ch = 0; ch < c; ch++) {
    const lut = luts[ch]!;
    const base = offset + ch * plane;
    for (let i = 0, j = ch; i < plane; i++, j += c) out[base + i] = lut[src[j]!]!;
  }
}

/**
 * Apply the spec's scale, mean and std to interleaved 8-bit pixels and return an NCHW float32
 * tensor (N = 1 for a single image). Pixels must already have the spec's size and channels.
 */
export function toTensor(pixels: RawPixels | readonly RawPixels[], spec: PreprocessSpec): TensorData {
  const list = Array.isArray(pixels) ? (pixels as readonly RawPixels[]) : [pixels as RawPixels];
  const [h, w] = spec.size;
  const c = channelsOf(spec.colorspace);
  const per = c * h * w;
  const out = new Float32Array(list.length * per);
  list.forEach((px, i) => toTensorInto(px, spec, out, i * per, `image #${i}`));
  return { data: out, dims: [list.length, c, h, w] };
}

// ---------------------------------------------------------------------------------------------
// Decoding with sharp

// sharp (libvips) is loaded on first use: PNGs at the model's size never need it, and loading it
// is a large share of a one-image `edgeexit run`.
let sharpLoading: Promise<typeof SharpFactory> | undefined;
function loadSharp(): Promise<typeof SharpFactory> {
  sharpLoading ??= import('sharp').then((m) => {
    // libvips' operation cache keys on the input; a stream of distinct images never hits it and
    // it would hold up to 50 MB of decoded pixels. Turning it off measured no slower.
    m.default.cache(false);
    return m.default;
  });
  return sharpLoading;
}

// fs.promises.readFile is four thread-pool round trips (open, stat, read, close): ~150 µs for a
// 1 KB file on the build VM, more than decoding it. Files up to this size are read
// synchronously instead (~15 µs); the event loop is held for at most one small read, while large
// camera images keep the asynchronous read.
const SYNC_READ_MAX = 64 * 1024;

async function readImageFile(file: string): Promise<Uint8Array> {
  return statSync(file).size <= SYNC_READ_MAX ? readFileSync(file) : fsp.readFile(file);
}

let pngFastPath = true;

/**
 * Turn the direct PNG decoder off (everything through sharp) or back on; returns the previous
 * setting. For benchmarks and for ruling the fast path out when diagnosing a decode.
 */
export function setPngFastPath(enabled: boolean): boolean {
  const was = pngFastPath;
  pngFastPath = enabled;
  return was;
}

// Above this many decoded bytes sharp is as fast (measured: 224×224 RGB, 150 KB, 3.9 ms direct
// vs 3.5 ms sharp on the 2-vCPU VM; 28×28 gray, 0.8 KB, 0.04 ms vs 2.2 ms) and, running on the
// thread pool, does not hold the event loop for milliseconds.
const DIRECT_MAX_BYTES = 32 * 1024;
/** Decoded samples per pixel by IHDR colour type (palette expands to RGB). */
const SAMPLES_BY_COLOR_TYPE: Record<number, number> = { 0: 1, 2: 3, 3: 3, 4: 2, 6: 4 };

// Chunks after which sharp would not return the stored samples unchanged: an ICC profile or
// gamma/chromaticities (colour management), an EXIF block (orientation).
const NEEDS_SHARP = new Set(['iCCP', 'gAMA', 'cHRM', 'eXIf']);

/**
 * Decode a PNG without sharp when that gives exactly what sharp's pipeline in decodeImage would:
 * the file is already the requested size, has none of NEEDS_SHARP, and the colour step is one
 * of the exact ones below. Returns null to send the bytes to sharp; throws PngFormatError for a
 * damaged file of the requested size.
 */
export function decodePngDirect(bytes: Uint8Array, options: DecodeOptions): RawPixels | null {
  // IHDR is always the first chunk: check the size before walking (and CRC-ing) a large file.
  if (!isPng(bytes) || bytes.length < 24) return null;
  const head = new DataView(bytes.buffer, bytes.byteOffset, 24);
  if (head.getUint32(16) !== options.width || head.getUint32(20) !== options.height) return null;
  if (options.width * options.height * (SAMPLES_BY_COLOR_TYPE[bytes[25]!] ?? 4) > DIRECT_MAX_BYTES) return null;
  const png = readPng(bytes);
  if (png.unsupported) return null;
  for (const t of png.ancillary) if (NEEDS_SHARP.has(t)) return null;
  return fitColour(decodePng(png), options);
}

/**
 * What sharp's flatten → grayscale/srgb gives for 8-bit input, in integers. Flattening is
 * floor((v·a + bg·(255 − a)) / 255) per channel; gray → RGB repeats the value; an RGB pixel
 * with r = g = b becomes that gray value. Each was compared with sharp over every (value, alpha)
 * pair. Returns null where sharp computes something else: RGB with colour → gray (sRGB
 * luminance in linear light), or a coloured background under a gray image or a gray output
 * (sharp then flattens onto one of its components, not onto the colour).
 */
function fitColour(px: PngPixels, options: DecodeOptions): RawPixels | null {
  const bg = options.background ?? { r: 0, g: 0, b: 0 };
  const n = px.width * px.height;
  const src = px.data;
  const inColour = px.channels >= 3 ? 3 : 1;
  const alpha = px.channels === 2 || px.channels === 4;
  const wantGray = options.colorspace === 'gray';
  let opaque = true;
  if (alpha) {
    for (let i = px.channels - 1; i < src.length; i += px.channels) {
      if (src[i] !== 255) {
        opaque = false;
        break;
      }
    }
  }
  if (!alpha && inColour === 1 && wantGray) return { data: src, width: px.width, height: px.height, channels: 1 };
  if (!alpha && inColour === 3 && !wantGray) return { data: src, width: px.width, height: px.height, channels: 3 };
  if (!opaque && !(bg.r === bg.g && bg.g === bg.b) && !(inColour === 3 && !wantGray)) return null;

  // Flatten into RGB (or gray when both input and output are gray), then convert.
  const c = inColour === 1 && wantGray ? 1 : 3;
  const flat = new Uint8Array(n * c);
  const bgs = c === 1 ? [bg.r] : [bg.r, bg.g, bg.b];
  for (let i = 0, s = 0; i < n; i++, s += px.channels) {
    const a = alpha ? src[s + px.channels - 1]! : 255;
    for (let k = 0; k < c; k++) {
      const v = src[s + (inColour === 1 ? 0 : k)]!;
      flat[i * c + k] = a === 255 ? v : Math.floor((v * a + bgs[k]! * (255 - a)) / 255);
    }
  }
  if (!wantGray) return { data: flat, width: px.width, height: px.height, channels: 3 };
  if (c === 1) return { data: flat, width: px.width, height: px.height, channels: 1 };
  const gray = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = flat[i * 3]!;
    if (flat[i * 3 + 1] !== r || flat[i * 3 + 2] !== r) return null;
    gray[i] = r;
  }
  return { data: gray, width: px.width, height: px.height, channels: 1 };
}

/** Default number of images decoded at once: sharp runs on libuv's pool (UV_THREADPOOL_SIZE, 4). */
export function defaultDecodeConcurrency(): number {
  // Read once: process.env is a native lookup, a measurable share of a 28×28 batch-1 call.
  decodeConcurrency ??= Math.max(2, (Number(process.env.UV_THREADPOOL_SIZE) || 4) * 2);
  return decodeConcurrency;
}
let decodeConcurrency: number | undefined;

function inputName(input: ImageInput, index?: number): string {
  if (typeof input === 'string') return input;
  if (input instanceof Uint8Array) return index === undefined ? 'image bytes' : `image #${index}`;
  return input.name ?? (index === undefined ? `${input.kind} image` : `image #${index}`);
}

function decodeError(name: string, err: unknown): InputError {
  if (err instanceof PngFormatError) {
    const p: Problem = {
      where: name,
      message: `cannot decode image (damaged PNG: ${err.message})`,
      fix: 'replace the file; it was damaged or cut short in transfer',
    };
    return new InputError(formatProblem(p), [p], { cause: err });
  }
  const msg = (err as Error)?.message ?? String(err);
  const missing = /Input file is missing|ENOENT|no such file/i.test(msg);
  const p: Problem = missing
    ? { where: name, message: 'image file not found' }
    : {
        where: name,
        message: `cannot decode image (${msg.split('\n')[0]})`,
        expected: 'a PNG, JPEG or WebP image',
        fix: 'replace or remove the file',
      };
  return new InputError(formatProblem(p), [p], { cause: err });
}

/**
 * Decode one image and bring it to the requested colour space and size: EXIF orientation is
 * applied, transparency is flattened onto `background`, output is 8-bit interleaved pixels.
 * Throws InputError naming the image when it cannot be decoded.
 */
export async function decodeImage(
  input: string | Uint8Array | RawPixels,
  options: DecodeOptions,
  name?: string,
): Promise<RawPixels> {
  return (await decodeImageFrom(input, options, name)).pixels;
}

/** An image's size as stored (after EXIF rotation), before it was fitted to the model's size. */
export interface SourceSize {
  width: number;
  height: number;
}

/**
 * decodeImage that also says how large the image was before fitting, so a caller can tell that
 * a stretch changed its aspect ratio. The size is read only under the stretch policy (the only
 * one that distorts); otherwise `source` is undefined.
 *
 * @example
 * const { pixels, source } = await decodeImageFrom('frame.jpg', { colorspace: 'gray', width: 28, height: 28 });
 * if (source && aspectDiffers(source, 28, 28)) console.warn('frame.jpg was stretched');
 */
export async function decodeImageFrom(
  input: string | Uint8Array | RawPixels,
  options: DecodeOptions,
  name?: string,
): Promise<{ pixels: RawPixels; source?: SourceSize }> {
  const stretch = (options.resize ?? 'stretch') === 'stretch';
  const label =
    name ?? (typeof input === 'string' ? input : input instanceof Uint8Array ? 'image bytes' : 'raw pixels');
  const want = channelsOf(options.colorspace);
  const bg = options.background ?? { r: 0, g: 0, b: 0 };
  let pipeline: Sharp;
  let source: SourceSize | undefined;
  try {
    if (typeof input === 'string') input = await readImageFile(input);
    if (input instanceof Uint8Array) {
      const fast = pngFastPath ? decodePngDirect(input, options) : null;
      // The fast path takes only images already at the model's size.
      if (fast) return { pixels: fast, ...(stretch ? { source: { width: options.width, height: options.height } } : {}) };
      // 'error', not sharp's default 'warning': camera JPEGs often carry harmless warnings
      // (extra bytes after EOI), while truncated or corrupt data is still refused.
      pipeline = (await loadSharp())(input, { failOn: 'error' });
      if (stretch) source = sourceSize(await pipeline.metadata());
    } else {
      if (input.data.length !== input.width * input.height * input.channels) {
        throw new Error(
          `raw buffer has ${input.data.length} bytes, expected ${input.width}×${input.height}×${input.channels}`,
        );
      }
      pipeline = (await loadSharp())(input.data, {
        raw: { width: input.width, height: input.height, channels: input.channels as 1 | 2 | 3 | 4 },
      });
      if (stretch) source = { width: input.width, height: input.height };
    }
    pipeline = pipeline.rotate().flatten({ background: bg });
    pipeline = options.colorspace === 'gray' ? pipeline.grayscale() : pipeline.toColourspace('srgb');
    const fit = options.resize === 'cover' ? 'cover' : options.resize === 'contain' ? 'contain' : 'fill';
    pipeline = pipeline.resize(options.width, options.height, { fit, background: bg });
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== want || info.width !== options.width || info.height !== options.height) {
      throw new Error(
        `sharp returned ${info.width}×${info.height}×${info.channels}, expected ${options.width}×${options.height}×${want}`,
      );
    }
    const pixels = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: info.channels };
    return { pixels, ...(source ? { source } : {}) };
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw decodeError(label, err);
  }
}

// EXIF orientations 5–8 turn the image by 90°, which swaps what the model sees as width and height.
function sourceSize(meta: { width?: number; height?: number; orientation?: number }): SourceSize | undefined {
  if (!meta.width || !meta.height) return undefined;
  return (meta.orientation ?? 1) >= 5 ? { width: meta.height, height: meta.width } : { width: meta.width, height: meta.height };
}

/** Aspect ratios further apart than this (relative) count as different: rounding to whole pixels stays below it. */
const ASPECT_TOLERANCE = 0.01;

/**
 * Whether an image of `source` size would be distorted by stretching it to `width`×`height`.
 *
 * @example
 * aspectDiffers({ width: 640, height: 480 }, 28, 28); // → true
 */
export function aspectDiffers(source: SourceSize, width: number, height: number): boolean {
  return Math.abs((source.width * height) / (source.height * width) - 1) > ASPECT_TOLERANCE;
}

/** Run `fn` over `items` with at most `limit` in flight; results keep the input order. */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

export interface BatchOptions {
  resize?: ResizePolicy;
  background?: { r: number; g: number; b: number };
  /** Images decoded at once (default `defaultDecodeConcurrency()`). */
  concurrency?: number;
}

/** The tensor rows that could be made, which inputs they came from, and which inputs failed. */
export interface PreparedBatch {
  tensor: TensorData;
  /** `indices[row]` is the position in `inputs` of tensor row `row`. */
  indices: number[];
  failures: { index: number; name: string; error: InputError }[];
  /** Inputs whose aspect ratio differed from the model's and were stretched (policy `stretch`). */
  stretched: { index: number; name: string; width: number; height: number }[];
}

function describe(e: unknown, name: string): InputError {
  if (e instanceof InputError) return e;
  return new InputError(`${name}: ${(e as Error)?.message ?? String(e)}`, [], { cause: e });
}

/** A raw frame or tensor whose channel count is not the model's: says which the model wants and why. */
export function channelError(name: string, what: string, want: number, spec: Pick<PreprocessSpec, 'colorspace'>, got: string): InputError {
  const p: Problem = {
    where: name,
    message: `${what} has the wrong number of channels;`,
    expected: `${want} (colorspace ${spec.colorspace} in the model's preprocess spec)`,
    got,
    fix:
      want === 1
        ? 'convert it to one gray channel first, or pass the image encoded (PNG/JPEG), which is converted'
        : `give ${want} channels (${spec.colorspace}) in that order, or pass the image encoded (PNG/JPEG), which is converted`,
  };
  return new InputError(formatProblem(p), [p]);
}

/**
 * The camera/dataset case without a promise per image: every input is a raw frame or PNG bytes
 * already at the model's size and channel count, the PNGs decoded by our own decoder. At batch 1
 * the async path's bookkeeping (a worker pool, a promise and a closure per image) costs about as
 * much as decoding a 28×28 PNG. Returns null — and the caller takes the general path, which
 * reports failures by name — as soon as one input is anything else or does not decode here.
 */
function prepareDirectSync(inputs: readonly ImageInput[], spec: PreprocessSpec, decodeOpts: DecodeOptions): PreparedBatch | null {
  if (inputs.length === 0) return null;
  const [h, w] = spec.size;
  const c = channelsOf(spec.colorspace);
  const per = c * h * w;
  const data = new Float32Array(inputs.length * per);
  for (let i = 0; i < inputs.length; i++) {
    const input = inputs[i]!;
    let px: RawPixels | null;
    if (typeof input === 'object' && 'kind' in input && input.kind === 'raw') {
      // Another size, channel count or length fails toTensorInto's check below: the general path then resizes or names it.
      px = input.pixels;
    } else {
      const bytes = input instanceof Uint8Array ? input : typeof input === 'object' && 'kind' in input && input.kind === 'encoded' ? input.bytes : undefined;
      if (!bytes || !pngFastPath) return null;
      try {
        px = decodePngDirect(bytes, decodeOpts);
      } catch {
        return null;
      }
    }
    if (!px) return null;
    try {
      toTensorInto(px, spec, data, i * per, inputName(input, i));
    } catch {
      return null;
    }
  }
  // Every input here is already the model's size: nothing stretched.
  return { tensor: { data, dims: [inputs.length, c, h, w] }, indices: Array.from({ length: inputs.length }, (_, i) => i), failures: [], stretched: [] };
}

/**
 * Turn any mix of inputs into one NCHW batch for `spec`. An input that cannot be used (corrupt
 * file, wrong tensor shape) becomes an entry in `failures` and the rest go on.
 */
export async function prepareBatch(
  inputs: readonly ImageInput[],
  spec: PreprocessSpec,
  options: BatchOptions = {},
): Promise<PreparedBatch> {
  const [h, w] = spec.size;
  const c = channelsOf(spec.colorspace);
  const per = c * h * w;
  const decodeOpts: DecodeOptions = {
    colorspace: spec.colorspace,
    width: w,
    height: h,
    resize: options.resize ?? spec.resize ?? 'stretch',
    background: options.background,
  };
  const sync = options.concurrency === undefined ? prepareDirectSync(inputs, spec, decodeOpts) : null;
  if (sync) return sync;
  type Ready = { px: RawPixels; source?: SourceSize } | { tensor: Float32Array };
  const decoded = async (x: string | Uint8Array | RawPixels, name: string): Promise<Ready> => {
    const d = await decodeImageFrom(x, decodeOpts, name);
    return { px: d.pixels, ...(d.source ? { source: d.source } : {}) };
  };
  const results = await mapBounded<ImageInput, ItemResult<Ready>>(
    inputs,
    options.concurrency ?? defaultDecodeConcurrency(),
    async (input, i) => {
      const name = inputName(input, i);
      try {
        if (typeof input === 'string' || input instanceof Uint8Array) {
          return { ok: true, value: await decoded(input, name) };
        }
        if (input.kind === 'encoded') return { ok: true, value: await decoded(input.bytes, name) };
        if (input.kind === 'raw') {
          const px = input.pixels;
          // Raw frames are taken as the model's colour space: a frame with other channels is
          // most likely a camera in the wrong mode, and a silent conversion would hide both
          // that and its cost. (Encoded images are converted: their colour is in the file.)
          if (px.channels !== c) throw channelError(name, 'raw frame', c, spec, `${px.channels} (${px.width}×${px.height}×${px.channels} pixels)`);
          // Already the model's size and channel count: no need to round-trip through sharp.
          if (px.width === w && px.height === h) {
            checkPixels(px, spec, name);
            return { ok: true, value: { px } };
          }
          return { ok: true, value: await decoded(px, name) };
        }
        const t = input.tensor;
        const dims = t.dims.length === 4 && t.dims[0] === 1 ? t.dims.slice(1) : t.dims;
        if (dims.length === 3 && dims[0] !== c) throw channelError(name, 'tensor', c, spec, `${dims[0]} (dims ${show(t.dims)})`);
        if (dims.length !== 3 || dims[0] !== c || dims[1] !== h || dims[2] !== w || t.data.length !== per) {
          throw new InputError(
            formatProblem({
              where: name,
              message: 'tensor does not match the model input',
              expected: `dims [1,${c},${h},${w}] or [${c},${h},${w}] with ${per} values`,
              got: `dims ${show(t.dims)} with ${t.data.length} values`,
            }),
          );
        }
        return { ok: true, value: { tensor: t.data } };
      } catch (e) {
        return { ok: false, name, error: describe(e, name) };
      }
    },
  );
  const okCount = results.filter((r) => r.ok).length;
  const data = new Float32Array(okCount * per);
  const indices: number[] = [];
  const failures: PreparedBatch['failures'] = [];
  const stretched: PreparedBatch['stretched'] = [];
  results.forEach((r, i) => {
    if (!r.ok) {
      failures.push({ index: i, name: r.name, error: r.error });
      return;
    }
    if ('source' in r.value && r.value.source && aspectDiffers(r.value.source, w, h)) {
      stretched.push({ index: i, name: inputName(inputs[i]!, i), ...r.value.source });
    }
    const offset = indices.length * per;
    if ('px' in r.value) toTensorInto(r.value.px, spec, data, offset, inputName(inputs[i]!, i));
    else data.set(r.value.tensor, offset);
    indices.push(i);
  });
  return { tensor: { data, dims: [okCount, c, h, w] }, indices, failures, stretched };
}

