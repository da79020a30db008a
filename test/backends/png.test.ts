// The direct PNG decoder (png.ts) and its use in decodeImage: identical pixels to the sharp
// pipeline on every committed calibration image and on every colour type and filter it
// accepts, fall-back to sharp for what it does not handle, and damaged files reported by name.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { decodeImage, decodePngDirect, prepareBatch, setPngFastPath, toTensor, type DecodeOptions, type PreprocessSpec, type RawPixels } from '../../src/backends/image.js';
import { PngFormatError, decodePng, readPng } from '../../src/backends/png.js';
import { InputError } from '../../src/util/errors.js';
import { FMNIST, scratch } from '../runtime/helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await scratch('png');
});
afterAll(() => {
  setPngFastPath(true);
});

/** decodeImage with the fast path off: what sharp alone gives. */
async function viaSharp(bytes: Uint8Array, o: DecodeOptions): Promise<RawPixels> {
  return (await viaSharpAll([bytes], o))[0]!;
}

async function viaSharpAll(list: Uint8Array[], o: DecodeOptions): Promise<RawPixels[]> {
  setPngFastPath(false);
  try {
    return await Promise.all(list.map((b) => decodeImage(b, o)));
  } finally {
    setPngFastPath(true);
  }
}

// ---- a tiny PNG writer of our own, so the tests can choose filters, depths and chunks ----

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

interface Spec {
  width: number;
  height: number;
  colorType: number;
  bitDepth?: number;
  /** Packed rows without filter bytes. */
  rows: Uint8Array;
  /** Filter type per row (cycled); applied for real, so the decoder must undo it. */
  filters?: number[];
  palette?: Uint8Array;
  trns?: Uint8Array;
  extra?: Buffer[];
  interlace?: number;
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

function writePng(s: Spec): Buffer {
  const depth = s.bitDepth ?? 8;
  const samples = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[s.colorType]!;
  const stride = Math.ceil((s.width * samples * depth) / 8);
  const bpp = Math.max(1, (samples * depth) >> 3);
  const filters = s.filters ?? [0];
  const raw = new Uint8Array(s.height * (stride + 1));
  for (let y = 0; y < s.height; y++) {
    const f = filters[y % filters.length]!;
    raw[y * (stride + 1)] = f;
    for (let i = 0; i < stride; i++) {
      const x = s.rows[y * stride + i]!;
      const a = i >= bpp ? s.rows[y * stride + i - bpp]! : 0;
      const b = y > 0 ? s.rows[(y - 1) * stride + i]! : 0;
      const c = y > 0 && i >= bpp ? s.rows[(y - 1) * stride + i - bpp]! : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f]!;
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 0xff;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(s.width, 0);
  ihdr.writeUInt32BE(s.height, 4);
  ihdr[8] = depth;
  ihdr[9] = s.colorType;
  ihdr[12] = s.interlace ?? 0;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...(s.extra ?? []),
    ...(s.palette ? [chunk('PLTE', s.palette)] : []),
    ...(s.trns ? [chunk('tRNS', s.trns)] : []),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

/** Deterministic bytes with both smooth runs and jumps, so every filter sees real work. */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let a = seed;
  for (let i = 0; i < n; i++) {
    a = (a * 1103515245 + 12345) >>> 0;
    out[i] = i % 7 < 4 ? (i * 3 + seed) & 0xff : a >>> 24;
  }
  return out;
}

const gray28: DecodeOptions = { colorspace: 'gray', width: 28, height: 28 };

describe('direct PNG decoding equals sharp', () => {
  it('on every committed calibration image (3,000): same pixels, same tensor', async () => {
    const spec: PreprocessSpec = { colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0.286], std: [0.353] };
    const files: string[] = [];
    for (const cls of (await fsp.readdir(FMNIST, { withFileTypes: true })).filter((e) => e.isDirectory())) {
      for (const f of await fsp.readdir(path.join(FMNIST, cls.name))) if (f.endsWith('.png')) files.push(path.join(FMNIST, cls.name, f));
    }
    expect(files).toHaveLength(3000);
    let direct = 0;
    for (let s = 0; s < files.length; s += 100) {
      const slice = files.slice(s, s + 100);
      const bytes = await Promise.all(slice.map((f) => fsp.readFile(f)));
      const ref = await viaSharpAll(bytes, gray28);
      bytes.forEach((b, i) => {
        const fast = decodePngDirect(b, gray28);
        if (fast) direct++;
        expect(fast, slice[i]).not.toBeNull();
        expect(Buffer.from(fast!.data).equals(Buffer.from(ref[i]!.data)), slice[i]).toBe(true);
      });
      // The tensors are then identical by construction (same pixels, same LUT); check it anyway.
      const a = toTensor(bytes.map((b) => decodePngDirect(b, gray28)!), spec);
      const r = toTensor(ref, spec);
      let maxDiff = 0;
      for (let k = 0; k < a.data.length; k++) maxDiff = Math.max(maxDiff, Math.abs(a.data[k]! - r.data[k]!));
      expect(maxDiff).toBe(0);
    }
    expect(direct).toBe(3000);
  }, 120_000);

  it('all five row filters at 1, 2, 3 and 4 bytes per pixel, to gray and to rgb', async () => {
    const cases = [
      { colorType: 0, ch: 1 },
      { colorType: 4, ch: 2 },
      { colorType: 2, ch: 3 },
      { colorType: 6, ch: 4 },
    ];
    for (const { colorType, ch } of cases) {
      const w = 13;
      const h = 11;
      const rows = pattern(w * h * ch, colorType + 1);
      // Alpha: a mix of opaque, transparent and partial values.
      if (ch === 2 || ch === 4) for (let i = ch - 1; i < rows.length; i += ch) rows[i] = [255, 0, 128, 255, 1, 254][i % 6]!;
      // Gray output from colour input is only direct for neutral pixels; make half the cases neutral.
      const png = writePng({ width: w, height: h, colorType, rows, filters: [0, 1, 2, 3, 4, 4, 3, 2, 1] });
      for (const colorspace of ['gray', 'rgb'] as const) {
        for (const background of [undefined, { r: 40, g: 40, b: 40 }, { r: 10, g: 200, b: 77 }]) {
          const o: DecodeOptions = { colorspace, width: w, height: h, ...(background ? { background } : {}) };
          const ref = await viaSharp(png, o);
          const got = await decodeImage(png, o);
          expect(Array.from(got.data), `type ${colorType} → ${colorspace} bg ${JSON.stringify(background)}`).toEqual(Array.from(ref.data));
          const direct = decodePngDirect(png, o);
          const colourToGray = ch >= 3 && colorspace === 'gray';
          const tintedFlatten = (ch === 2 || ch === 4) && background?.r === 10 && !(ch === 4 && colorspace === 'rgb');
          if (!colourToGray && !tintedFlatten) expect(direct, `type ${colorType} → ${colorspace}`).not.toBeNull();
          if (direct) expect(Array.from(direct.data)).toEqual(Array.from(ref.data));
        }
      }
    }
  });

  it('neutral RGB(A) to gray is direct and equal; coloured RGB to gray falls back to sharp', async () => {
    const w = 9;
    const h = 5;
    const v = pattern(w * h, 3);
    const rgb = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = v[i]!;
    const neutral = writePng({ width: w, height: h, colorType: 2, rows: rgb, filters: [4] });
    const o: DecodeOptions = { colorspace: 'gray', width: w, height: h };
    expect(Array.from(decodePngDirect(neutral, o)!.data)).toEqual(Array.from((await viaSharp(neutral, o)).data));
    rgb[4] = 200;
    const coloured = writePng({ width: w, height: h, colorType: 2, rows: rgb });
    expect(decodePngDirect(coloured, o)).toBeNull();
    expect(Array.from((await decodeImage(coloured, o)).data)).toEqual(Array.from((await viaSharp(coloured, o)).data));
  });

  it('common ancillary chunks (sRGB, pHYs, tEXt, tIME, bKGD) change nothing: direct and equal to sharp', async () => {
    const w = 10;
    const h = 7;
    const rows = pattern(w * h * 4, 11);
    for (let i = 3; i < rows.length; i += 4) rows[i] = [255, 0, 77][i % 3]!;
    const time = Uint8Array.of(0x07, 0xea, 11, 27, 3, 0, 0);
    const extra = [
      chunk('sRGB', Uint8Array.of(0)),
      chunk('pHYs', Uint8Array.of(0, 0, 0x0b, 0x13, 0, 0, 0x0b, 0x13, 1)),
      chunk('tEXt', Buffer.from('Software\0a camera')),
      chunk('tIME', time),
      // A red file background: sharp must still flatten onto the background it is given.
      chunk('bKGD', Uint8Array.of(0, 255, 0, 0, 0, 0)),
    ];
    const png = writePng({ width: w, height: h, colorType: 6, rows, filters: [4, 1], extra });
    for (const o of [{ colorspace: 'rgb', width: w, height: h }, { colorspace: 'rgb', width: w, height: h, background: { r: 9, g: 99, b: 199 } }] as DecodeOptions[]) {
      const direct = decodePngDirect(png, o);
      expect(direct).not.toBeNull();
      expect(Array.from(direct!.data)).toEqual(Array.from((await viaSharp(png, o)).data));
    }
  });

  it('palette images at 1, 2, 4 and 8 bits, with and without tRNS', async () => {
    for (const depth of [1, 2, 4, 8]) {
      const w = 11;
      const h = 6;
      const entries = Math.min(1 << depth, 20);
      const palette = pattern(entries * 3, depth);
      const idx = pattern(w * h, depth + 9).map((x) => x % entries);
      const perByte = 8 / depth;
      const stride = Math.ceil(w / perByte);
      const rows = new Uint8Array(h * stride);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rows[y * stride + Math.floor(x / perByte)]! |= idx[y * w + x]! << (8 - depth * ((x % perByte) + 1));
      for (const trns of [undefined, Uint8Array.from({ length: Math.min(entries, 5) }, (_, i) => [255, 0, 90, 200, 255][i]!)]) {
        const png = writePng({ width: w, height: h, colorType: 3, bitDepth: depth, rows, palette, filters: [0, 1, 2, 3, 4], ...(trns ? { trns } : {}) });
        for (const colorspace of ['rgb', 'gray'] as const) {
          const o: DecodeOptions = { colorspace, width: w, height: h };
          const ref = await viaSharp(png, o);
          expect(Array.from((await decodeImage(png, o)).data), `depth ${depth} tRNS ${!!trns} → ${colorspace}`).toEqual(Array.from(ref.data));
          if (colorspace === 'rgb') expect(decodePngDirect(png, o), `depth ${depth}`).not.toBeNull();
        }
      }
    }
  });

  it('hands sharp what it does not do: another size, interlaced, 16-bit, 4-bit gray, gAMA/eXIf, colour-key tRNS, over 32 KB decoded', async () => {
    const px = pattern(28 * 28, 5);
    const o = gray28;
    const plain = writePng({ width: 28, height: 28, colorType: 0, rows: px });
    expect(decodePngDirect(plain, o)).not.toBeNull();
    const cases: Record<string, Buffer> = {
      'another size': await sharp(Buffer.from(pattern(30 * 30, 1)), { raw: { width: 30, height: 30, channels: 1 } }).png().toBuffer(),
      interlaced: await sharp(Buffer.from(px), { raw: { width: 28, height: 28, channels: 1 } }).png({ progressive: true }).toBuffer(),
      '16-bit': await sharp(Buffer.from(px), { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('grey16').png().toBuffer(),
      '4-bit gray': writePng({ width: 28, height: 28, colorType: 0, bitDepth: 4, rows: pattern(28 * 14, 2) }),
      gAMA: writePng({ width: 28, height: 28, colorType: 0, rows: px, extra: [chunk('gAMA', Uint8Array.of(0, 0, 0xb1, 0x8f))] }),
      eXIf: writePng({ width: 28, height: 28, colorType: 0, rows: px, extra: [chunk('eXIf', Buffer.from('MM\0*\0\0\0\x08\0\0'))] }),
      'colour-key tRNS': writePng({ width: 28, height: 28, colorType: 0, rows: px, trns: Uint8Array.of(0, 7) }),
    };
    for (const [what, png] of Object.entries(cases)) {
      expect(decodePngDirect(png, o), what).toBeNull();
      expect(Array.from((await decodeImage(png, o)).data), what).toEqual(Array.from((await viaSharp(png, o)).data));
    }
    expect(readPng(cases.interlaced!).unsupported).toBe('interlaced (Adam7)');
    // Large images: sharp is as fast there and keeps the work off the event loop.
    const big = await sharp(Buffer.from(pattern(128 * 128 * 3, 4)), { raw: { width: 128, height: 128, channels: 3 } }).png().toBuffer();
    const bigOpts: DecodeOptions = { colorspace: 'rgb', width: 128, height: 128 };
    expect(decodePngDirect(big, bigOpts)).toBeNull();
    expect(Array.from((await decodeImage(big, bigOpts)).data)).toEqual(Array.from((await viaSharp(big, bigOpts)).data));
    expect(Array.from(decodePng(readPng(big)).data)).toEqual(Array.from((await viaSharp(big, bigOpts)).data));
  });
});

describe('damaged PNGs (bad input)', () => {
  const px = pattern(28 * 28, 8);
  const good = writePng({ width: 28, height: 28, colorType: 0, rows: px, filters: [1, 2, 4] });
  /** Offset of the first chunk of `type`. */
  const at = (b: Buffer, type: string): number => b.indexOf(Buffer.from(type, 'latin1')) - 4;

  async function refusal(bytes: Uint8Array, file: string): Promise<Error> {
    const p = path.join(dir, file);
    await fsp.writeFile(p, bytes);
    const err = await decodeImage(p, gray28).then(
      () => new Error('expected a rejection'),
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(InputError);
    expect(err.cause).toBeInstanceOf(PngFormatError);
    // The same file in a batch: reported by name, the batch goes on.
    const b = await prepareBatch([p, good], { colorspace: 'gray', size: [28, 28], scale: 1, mean: [0], std: [1] });
    expect(b.indices).toEqual([1]);
    expect(b.failures[0]!.error.message).toBe(err.message);
    return err;
  }

  it('bad input: a CRC mismatch in IDAT names the file, the chunk, both CRCs and the fix', async () => {
    const bad = Buffer.from(good);
    const idat = at(bad, 'IDAT');
    bad[idat + 8 + 3]! ^= 0x10;
    const err = await refusal(bad, 'bad-crc.png');
    expect(err.message).toMatch(
      new RegExp(`^${escape(path.join(dir, 'bad-crc.png'))}: cannot decode image \\(damaged PNG: IDAT chunk at offset ${idat}: CRC mismatch \\(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\\)\\) \\(fix: replace the file; it was damaged or cut short in transfer\\)$`),
    );
  });

  it('bad input: an IDAT whose zlib stream is cut short (CRCs intact) is refused as damaged', async () => {
    const raw = zlib.inflateSync(readPng(good).idat[0]!);
    const cut = zlib.deflateSync(raw).subarray(0, 60);
    const ihdr = good.subarray(8, 8 + 25);
    const png = Buffer.concat([good.subarray(0, 8), ihdr, chunk('IDAT', cut), chunk('IEND', new Uint8Array(0))]);
    const err = await refusal(png, 'cut-idat.png');
    expect(err.message).toMatch(/cut-idat\.png: cannot decode image \(damaged PNG: IDAT: the compressed image data is damaged or cut short \(zlib: unexpected end of file\)\)/);
  });

  it('bad input: a file cut off inside IDAT names the chunk and says truncated', async () => {
    const err = await refusal(good.subarray(0, at(good, 'IDAT') + 30), 'cut-file.png');
    expect(err.message).toMatch(/cut-file\.png: cannot decode image \(damaged PNG: truncated: IDAT chunk at offset 33 declares \d+ bytes, the file ends 18 bytes into it\)/);
  });

  it('bad input: an unknown row filter type names the row and the valid types', async () => {
    const raw = Buffer.from(zlib.inflateSync(readPng(good).idat[0]!));
    raw[3 * 29] = 7;
    const ihdr = good.subarray(8, 8 + 25);
    const png = Buffer.concat([good.subarray(0, 8), ihdr, chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
    const err = await refusal(png, 'bad-filter.png');
    expect(err.message).toContain('bad-filter.png: cannot decode image (damaged PNG: row 3: filter type 7, expected 0–4 (none, sub, up, average, paeth))');
  });

  it('bad input: image data shorter than the header promises, and missing IEND', async () => {
    const raw = zlib.inflateSync(readPng(good).idat[0]!);
    const ihdr = good.subarray(8, 8 + 25);
    const short = Buffer.concat([good.subarray(0, 8), ihdr, chunk('IDAT', zlib.deflateSync(raw.subarray(0, 29 * 20))), chunk('IEND', new Uint8Array(0))]);
    expect((await refusal(short, 'short.png')).message).toContain('damaged PNG: IDAT: 580 bytes of image data, expected 812 for 28×28 (truncated)');
    expect((await refusal(good.subarray(0, good.length - 12), 'no-iend.png')).message).toContain('damaged PNG: truncated: no IEND chunk');
  });

  it('a bad CRC on an ancillary chunk is left to sharp, as the PNG spec allows', () => {
    const text = chunk('tEXt', Buffer.from('Comment\0hello'));
    text[text.length - 1]! ^= 1;
    const png = writePng({ width: 28, height: 28, colorType: 0, rows: px, extra: [text] });
    expect(readPng(png).unsupported).toBe('tEXt chunk has a bad CRC');
    expect(decodePngDirect(png, gray28)).toBeNull();
    expect(() => decodePng(readPng(good))).not.toThrow();
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
