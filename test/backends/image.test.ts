import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import {
  decodeImage,
  parsePreprocessSpec,
  prepareBatch,
  toTensor,
  type ImageInput,
  type PreprocessSpec,
  type RawPixels,
} from '../../src/backends/image.js';
import { InputError, ValidationError } from '../../src/util/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-image-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** Encode interleaved pixels with sharp. */
function encode(px: RawPixels, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  const s = sharp(px.data, { raw: { width: px.width, height: px.height, channels: px.channels as 1 | 3 } });
  return (format === 'png' ? s.png() : s.jpeg({ quality: 95 })).toBuffer();
}

/** Gray image whose columns are filled by `col(x)`. */
function columns(width: number, height: number, col: (x: number) => number): RawPixels {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = col(x);
  return { data, width, height, channels: 1 };
}

const row = (px: RawPixels, y: number): number[] => Array.from(px.data.subarray(y * px.width, (y + 1) * px.width));

describe('decodeImage: colour space', () => {
  it('rgb → gray keeps neutral values and gives one channel', async () => {
    const bytes = await sharp({ create: { width: 3, height: 2, channels: 3, background: { r: 100, g: 100, b: 100 } } })
      .png()
      .toBuffer();
    const px = await decodeImage(bytes, { colorspace: 'gray', width: 3, height: 2 });
    expect(px).toMatchObject({ width: 3, height: 2, channels: 1 });
    expect(Array.from(px.data)).toEqual(new Array(6).fill(100));
  });

  it('rgb → gray weights green above red above blue (luminance)', async () => {
    const one = async (r: number, g: number, b: number): Promise<number> => {
      const bytes = await sharp({ create: { width: 1, height: 1, channels: 3, background: { r, g, b } } }).png().toBuffer();
      return (await decodeImage(bytes, { colorspace: 'gray', width: 1, height: 1 })).data[0]!;
    };
    const [r, g, b] = [await one(255, 0, 0), await one(0, 255, 0), await one(0, 0, 255)];
    expect(g).toBeGreaterThan(r);
    expect(r).toBeGreaterThan(b);
    expect(b).toBeGreaterThan(0);
  });

  it('gray → rgb gives three equal channels', async () => {
    const bytes = await encode(columns(4, 2, (x) => x * 60));
    const px = await decodeImage(bytes, { colorspace: 'rgb', width: 4, height: 2 });
    expect(px).toMatchObject({ width: 4, height: 2, channels: 3 });
    expect(Array.from(px.data.subarray(0, 12))).toEqual([0, 0, 0, 60, 60, 60, 120, 120, 120, 180, 180, 180]);
  });

  it('transparent pixels are flattened onto black', async () => {
    const rgba = Uint8Array.from([255, 255, 255, 0, 255, 255, 255, 255]);
    const bytes = await sharp(rgba, { raw: { width: 2, height: 1, channels: 4 } }).png().toBuffer();
    const px = await decodeImage(bytes, { colorspace: 'gray', width: 2, height: 1 });
    expect(Array.from(px.data)).toEqual([0, 255]);
  });
});

describe('decodeImage: resize policies', () => {
  // 84×28: three 28-wide bands 0 | 128 | 255.
  let bands: Buffer;
  beforeAll(async () => {
    bands = await encode(columns(84, 28, (x) => (x < 28 ? 0 : x < 56 ? 128 : 255)));
  });

  it('stretch (default) squeezes all three bands into 28 columns', async () => {
    const px = await decodeImage(bands, { colorspace: 'gray', width: 28, height: 28 });
    const r = row(px, 14);
    expect(r[2]).toBe(0);
    expect(r[14]).toBe(128);
    expect(r[25]).toBe(255);
    expect(row(px, 0)).toEqual(r);
  });

  it('cover crops the centre band', async () => {
    const px = await decodeImage(bands, { colorspace: 'gray', width: 28, height: 28, resize: 'cover' });
    expect(new Set(px.data)).toEqual(new Set([128]));
  });

  it('contain letterboxes with black', async () => {
    const px = await decodeImage(bands, { colorspace: 'gray', width: 28, height: 28, resize: 'contain' });
    expect(row(px, 0)).toEqual(new Array(28).fill(0));
    expect(row(px, 27)).toEqual(new Array(28).fill(0));
    const mid = row(px, 14);
    expect(mid[14]).toBe(128);
    expect(mid[26]).toBe(255);
  });
});

describe('decodeImage: EXIF orientation', () => {
  it('a JPEG stored landscape with orientation 6 is decoded upright (portrait)', async () => {
    // Stored 32×16: left half black, right half white. Orientation 6 = rotate 90° clockwise to
    // display, which puts the left half on top: 16×32, black top, white bottom.
    const stored = columns(32, 16, (x) => (x < 16 ? 0 : 255));
    const jpeg = await sharp(stored.data, { raw: { width: 32, height: 16, channels: 1 } })
      .jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 })
      .toBuffer();
    expect((await sharp(jpeg).metadata()).orientation).toBe(6);
    const file = path.join(dir, 'rotated.jpg');
    await fsp.writeFile(file, jpeg);

    const px = await decodeImage(file, { colorspace: 'gray', width: 16, height: 32 });
    for (const y of [0, 5, 10]) expect(Math.max(...row(px, y))).toBeLessThan(30);
    for (const y of [21, 26, 31]) expect(Math.min(...row(px, y))).toBeGreaterThan(225);
  });
});

describe('toTensor', () => {
  it('gray: (p × scale − mean) / std against hand-computed values', () => {
    const spec: PreprocessSpec = { colorspace: 'gray', size: [2, 2], scale: 1 / 255, mean: [0.5], std: [0.25] };
    const t = toTensor({ data: Uint8Array.from([0, 51, 128, 255]), width: 2, height: 2, channels: 1 }, spec);
    expect(t.dims).toEqual([1, 1, 2, 2]);
    const want = [-2, -1.2, (128 / 255 - 0.5) / 0.25, 2];
    want.forEach((v, i) => expect(t.data[i]).toBeCloseTo(v, 6));
  });

  it('rgb: per-channel mean/std and NCHW planes from interleaved pixels', () => {
    const spec: PreprocessSpec = {
      colorspace: 'rgb',
      size: [1, 2],
      scale: 1 / 255,
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
    };
    // two pixels: (255, 0, 128) then (0, 255, 51)
    const t = toTensor({ data: Uint8Array.from([255, 0, 128, 0, 255, 51]), width: 2, height: 1, channels: 3 }, spec);
    expect(t.dims).toEqual([1, 3, 1, 2]);
    const want = [
      (1 - 0.485) / 0.229,
      (0 - 0.485) / 0.229, // R plane
      (0 - 0.456) / 0.224,
      (1 - 0.456) / 0.224, // G plane
      (128 / 255 - 0.406) / 0.225,
      (0.2 - 0.406) / 0.225, // B plane
    ];
    want.forEach((v, i) => expect(t.data[i]).toBeCloseTo(v, 5));
  });

  it('a batch of images stacks along N', () => {
    const spec: PreprocessSpec = { colorspace: 'gray', size: [1, 1], scale: 1, mean: [0], std: [1] };
    const t = toTensor(
      [7, 9, 11].map((v) => ({ data: Uint8Array.of(v), width: 1, height: 1, channels: 1 })),
      spec,
    );
    expect(t.dims).toEqual([3, 1, 1, 1]);
    expect(Array.from(t.data)).toEqual([7, 9, 11]);
  });

  it('pixels of the wrong size are refused', () => {
    const spec: PreprocessSpec = { colorspace: 'gray', size: [2, 2], scale: 1, mean: [0], std: [1] };
    expect(() => toTensor({ data: new Uint8Array(9), width: 3, height: 3, channels: 1 }, spec)).toThrow(InputError);
    expect(() => toTensor({ data: new Uint8Array(9), width: 3, height: 3, channels: 1 }, spec)).toThrow(
      'image #0: pixels do not match the model input expected 2×2×1 (gray) got 3×3×1',
    );
  });
});

describe('prepareBatch', () => {
  const spec: PreprocessSpec = { colorspace: 'gray', size: [4, 4], scale: 1, mean: [0], std: [1] };

  it('mixes files, bytes, raw pixels and tensors; bad items are reported, not fatal', async () => {
    const good = path.join(dir, 'good.png');
    await fsp.writeFile(good, await encode(columns(4, 4, () => 50)));
    const corrupt = path.join(dir, 'corrupt.png');
    const okPng = await encode(columns(4, 4, () => 60));
    await fsp.writeFile(corrupt, okPng.subarray(0, 40)); // a PNG cut short
    const missing = path.join(dir, 'missing.png');
    const tensor = new Float32Array(16).fill(-3);

    const batch = await prepareBatch(
      [
        good,
        corrupt,
        okPng,
        { kind: 'raw', pixels: columns(4, 4, () => 70) }, // same size: used as is
        { kind: 'raw', pixels: columns(8, 8, () => 80), name: 'big-raw' }, // resized by sharp
        missing,
        { kind: 'tensor', tensor: { data: tensor, dims: [1, 1, 4, 4] } },
        { kind: 'tensor', tensor: { data: new Float32Array(3), dims: [3] }, name: 'bad-tensor' },
      ],
      spec,
      { concurrency: 3 },
    );
    expect(batch.indices).toEqual([0, 2, 3, 4, 6]);
    expect(batch.tensor.dims).toEqual([5, 1, 4, 4]);
    const firstOfRow = [0, 1, 2, 3, 4].map((r) => batch.tensor.data[r * 16]);
    expect(firstOfRow).toEqual([50, 60, 70, 80, -3]);

    expect(batch.failures.map((f) => f.index)).toEqual([1, 5, 7]);
    for (const f of batch.failures) expect(f.error).toBeInstanceOf(InputError);
    expect(batch.failures[0]!.error.message).toMatch(
      new RegExp(`^${corrupt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot decode image \\(`),
    );
    expect(batch.failures[1]!.error.message).toBe(`${missing}: image file not found`);
    expect(batch.failures[2]!.error.message).toBe(
      'bad-tensor: tensor does not match the model input expected dims [1,1,4,4] or [1,4,4] with 16 values got dims [3] with 3 values',
    );
  });

  it('raw frames and PNG bytes at the model size take the direct path and give the tensors the general path gives', async () => {
    const frame = columns(4, 4, (x) => 10 * x + 5);
    const png = await encode(columns(4, 4, (x) => 200 - x));
    const inputs: ImageInput[] = [{ kind: 'raw', pixels: frame }, png, { kind: 'raw', pixels: frame, name: 'again' }];
    const direct = await prepareBatch(inputs, spec);
    const general = await prepareBatch(inputs, spec, { concurrency: 1 });
    expect([...direct.tensor.data]).toEqual([...general.tensor.data]);
    expect(direct.tensor.dims).toEqual([3, 1, 4, 4]);
    expect(Array.from(direct.tensor.data.subarray(0, 4))).toEqual([5, 15, 25, 35]);
    // bad input: a frame of the right size but too few bytes falls back to the general path, which names it
    const short = await prepareBatch([{ kind: 'raw', pixels: { ...frame, data: frame.data.subarray(0, 10) }, name: 'short-frame' }], spec);
    expect(short.indices).toEqual([]);
    expect(short.failures[0]!.error).toBeInstanceOf(InputError);
    expect(short.failures[0]!.error.message).toBe('short-frame: expected 16 pixel bytes for 4×4×1, got 10');
  });

  it('a JPEG cut off mid-stream is refused, not half-decoded', async () => {
    const noise = Uint8Array.from({ length: 64 * 64 }, (_, i) => (i * 7919) % 251);
    const jpeg = await sharp(noise, { raw: { width: 64, height: 64, channels: 1 } }).jpeg().toBuffer();
    const err = await rejection(
      decodeImage(jpeg.subarray(0, Math.floor(jpeg.length * 0.9)), { colorspace: 'gray', width: 4, height: 4 }, 'cut.jpg'),
    );
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      'cut.jpg: cannot decode image (VipsJpeg: premature end of JPEG image) expected a PNG, JPEG or WebP image' +
        ' (fix: replace or remove the file)',
    );
  });

  it('decodeImage on a corrupt file rejects with InputError naming the file', async () => {
    const bad = path.join(dir, 'garbage.jpg');
    await fsp.writeFile(bad, 'definitely not a jpeg');
    const err = await rejection(decodeImage(bad, { colorspace: 'gray', width: 4, height: 4 }));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain(`${bad}: cannot decode image (`);
  });
});

describe('parsePreprocessSpec', () => {
  it('accepts the metadata JSON string', () => {
    const spec = parsePreprocessSpec(
      '{"colorspace":"gray","size":[28,28],"scale":0.00392156862745098,"mean":[0.2860],"std":[0.3530]}',
    );
    expect(spec).toEqual({ colorspace: 'gray', size: [28, 28], scale: 0.00392156862745098, mean: [0.286], std: [0.353] });
  });

  it('reports every problem at once', () => {
    let err: unknown;
    try {
      parsePreprocessSpec({ colorspace: 'bgr', size: [28], scale: 0, mean: [0.5, 0.5], std: [0] }, 'model.onnx: edgeexit.preprocess');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    const v = err as ValidationError;
    expect(v.problems.map((p) => p.where)).toEqual([
      'model.onnx: edgeexit.preprocess: colorspace',
      'model.onnx: edgeexit.preprocess: size',
      'model.onnx: edgeexit.preprocess: scale',
      'model.onnx: edgeexit.preprocess: mean',
      'model.onnx: edgeexit.preprocess: std',
    ]);
    expect(v.message.split('\n')[0]).toBe('model.onnx: edgeexit.preprocess: 5 problems');
  });
});

describe('preprocess spec: resize policy', () => {
  const base = { colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0], std: [1] };

  it('is read when given, absent (stretch) when not, and refused when unknown', () => {
    expect(parsePreprocessSpec({ ...base, resize: 'cover' }).resize).toBe('cover');
    expect('resize' in parsePreprocessSpec(base)).toBe(false);
    let err: unknown;
    try {
      parsePreprocessSpec({ ...base, resize: 'crop' }, 'm.onnx: edgeexit.preprocess');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).problems).toEqual([
      expect.objectContaining({ where: 'm.onnx: edgeexit.preprocess: resize', got: '"crop"', expected: expect.stringContaining('"stretch", "cover", "contain"') }),
    ]);
  });

  it("prepareBatch fits images by the spec's policy and lists the ones stretched to another aspect ratio", async () => {
    // 84×28: three 28-wide bands 0 | 128 | 255; a 28×28 image of the same bands has the model's aspect.
    const wide = await encode(columns(84, 28, (x) => (x < 28 ? 0 : x < 56 ? 128 : 255)));
    const square = await encode(columns(30, 30, (x) => (x < 10 ? 0 : x < 20 ? 128 : 255)));
    const spec = (resize?: 'stretch' | 'cover' | 'contain'): PreprocessSpec =>
      parsePreprocessSpec({ ...base, ...(resize ? { resize } : {}) });

    const stretched = await prepareBatch([wide, square], spec(), { concurrency: 1 });
    expect(stretched.stretched).toEqual([{ index: 0, name: 'image #0', width: 84, height: 28 }]);
    // Stretch keeps all three bands in one row; cover keeps only the middle one.
    const row0 = (b: typeof stretched): number[] => Array.from(b.tensor.data.subarray(14 * 28, 15 * 28), (v) => Math.round(v * 255));
    expect([2, 14, 25].map((x) => row0(stretched)[x])).toEqual([0, 128, 255]);

    const cover = await prepareBatch([wide], spec('cover'), { concurrency: 1 });
    expect(new Set(row0(cover))).toEqual(new Set([128]));
    expect(cover.stretched).toEqual([]);
    const contain = await prepareBatch([wide], spec('contain'), { concurrency: 1 });
    expect(Array.from(contain.tensor.data.subarray(0, 28))).toEqual(new Array(28).fill(0));
    expect(contain.stretched).toEqual([]);
    // A per-call policy still overrides the spec's.
    const override = await prepareBatch([wide], spec('cover'), { resize: 'stretch', concurrency: 1 });
    expect(override.stretched).toHaveLength(1);
  });

  it('a raw frame of another aspect ratio counts as stretched; one of the same aspect does not', async () => {
    const frame = (w: number, h: number): ImageInput => ({ kind: 'raw', pixels: columns(w, h, () => 50), name: `frame ${w}x${h}` });
    const r = await prepareBatch([frame(64, 48), frame(56, 56)], parsePreprocessSpec(base));
    expect(r.stretched).toEqual([{ index: 0, name: 'frame 64x48', width: 64, height: 48 }]);
  });
});
