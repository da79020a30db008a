// A small PNG decoder for the one case that dominates edge inference input: a non-interlaced
// 8-bit image (gray, gray+alpha, RGB, RGBA, or palette at 1–8 bits) that is already the model's
// size. sharp costs 0.6–2 ms per call on such a 28×28 file on the 2-vCPU build VM, nearly all of
// it fixed cost (a libuv thread hop and pipeline set-up; even metadata() alone is ~0.4 ms), which
// is several times the model itself; the chunk walk, node:zlib inflate and unfiltering here take
// ~40 µs (scripts/decode-bench.ts). Inflate stays in node:zlib. A table-driven JS inflater was
// written and measured twice (2026-11-27, interleaved over 1,000 calibration IDATs of 148–766
// bytes): node:zlib's fixed cost is real (~10 µs on a 1-byte stream vs ~1 µs), but V8 decodes
// the ~450 literals and ~24 matches of a typical file 2–3x slower than zlib's C, so inflate took
// 1.8x and the whole decode 1.45x as long; it was dropped. Written from the PNG specification (ISO/IEC 15948, W3C PNG 3rd ed.):
// chunk layout, CRC-32 over type + data, zlib-wrapped IDAT stream, the five per-row filter types,
// palette expansion with tRNS.
//
// It is deliberately two-step. `readPng` walks the chunks and checks their CRCs without
// inflating anything, so the caller can decide from the header alone whether this decoder is
// allowed to handle the image (size, depth, colour management) and otherwise hand the bytes to
// sharp. `decodePng` then inflates and unfilters. Anything this decoder does not implement is
// reported as `unsupported` (the caller falls back); damage is thrown as PngFormatError.
import zlib from 'node:zlib';

export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

/** The bytes are a PNG but damaged or cut short: the message says which chunk and how. */
export class PngFormatError extends Error {
  override name = 'PngFormatError';
}

/** PNG colour types (IHDR byte 9). */
export const ColorType = Object.freeze({ Gray: 0, RGB: 2, Palette: 3, GrayAlpha: 4, RGBA: 6 } as const);

const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const DEPTHS: Record<number, readonly number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

export interface PngHeader {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
  interlaced: boolean;
}

export interface PngFile {
  header: PngHeader;
  /** RGB triples; palette images only. */
  palette?: Uint8Array;
  /** tRNS chunk data as stored (its meaning depends on the colour type). */
  transparency?: Uint8Array;
  /** The IDAT payloads, in order (one zlib stream split across chunks). */
  idat: Uint8Array[];
  /** Types of every ancillary chunk present, for the caller's fall-back rules. */
  ancillary: Set<string>;
  /**
   * Why this decoder will not decode the image (null when it will): a valid PNG it does not
   * implement. The caller should hand such a file to a full decoder.
   */
  unsupported: string | null;
}

/** 8-bit interleaved pixels with the channels the file has (palette expanded to RGB or RGBA). */
export interface PngPixels {
  data: Uint8Array;
  width: number;
  height: number;
  /** 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. */
  channels: number;
}

export function isPng(bytes: Uint8Array): boolean {
  if (bytes.length < 8) return false;
  for (let i = 0; i < 8; i++) if (bytes[i] !== PNG_SIGNATURE[i]) return false;
  return true;
}

const hex = (n: number): string => '0x' + (n >>> 0).toString(16).padStart(8, '0');

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/**
 * Walk the chunks of a PNG and check them, without inflating the image data. Throws
 * PngFormatError for damage: a chunk running past the end, a bad CRC on a critical chunk, a
 * malformed IHDR/PLTE, no IDAT, no IEND. A bad CRC on an ancillary chunk, which the
 * specification lets a decoder ignore, only marks the file unsupported so that the full decoder
 * gets to apply its own policy.
 */
export function readPng(bytes: Uint8Array): PngFile {
  if (!isPng(bytes)) throw new PngFormatError('not a PNG (wrong signature)');
  let at = 8;
  let header: PngHeader | undefined;
  let palette: Uint8Array | undefined;
  let transparency: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  const ancillary = new Set<string>();
  let unsupported: string | null = null;
  let sawEnd = false;
  let idatClosed = false;
  while (at < bytes.length) {
    if (at + 12 > bytes.length) throw new PngFormatError(`truncated: ${bytes.length - at} stray bytes at offset ${at}, too few for a chunk`);
    const length = u32(bytes, at);
    const type = String.fromCharCode(bytes[at + 4]!, bytes[at + 5]!, bytes[at + 6]!, bytes[at + 7]!);
    for (let k = 4; k < 8; k++) {
      const ch = bytes[at + k]! | 0x20; // letters only, either case
      if (ch < 0x61 || ch > 0x7a) throw new PngFormatError(`bad chunk type ${JSON.stringify(type)} at offset ${at}`);
    }
    const end = at + 8 + length;
    if (length > 0x7fffffff || end + 4 > bytes.length) {
      throw new PngFormatError(`truncated: ${type} chunk at offset ${at} declares ${length} bytes, the file ends ${Math.max(0, bytes.length - at - 12)} bytes into it`);
    }
    const data = bytes.subarray(at + 8, end);
    const stored = u32(bytes, end);
    const computed = zlib.crc32(bytes.subarray(at + 4, end)) >>> 0;
    // Bit 5 of the first type byte (lower case) marks an ancillary chunk.
    const critical = (bytes[at + 4]! & 0x20) === 0;
    if (stored !== computed) {
      if (critical) throw new PngFormatError(`${type} chunk at offset ${at}: CRC mismatch (stored ${hex(stored)}, computed ${hex(computed)})`);
      unsupported ??= `${type} chunk has a bad CRC`;
    }
    if (!header && type !== 'IHDR') throw new PngFormatError(`the first chunk is ${type}, expected IHDR`);
    if (type !== 'IDAT' && idat.length > 0) idatClosed = true;
    switch (type) {
      case 'IHDR': {
        if (header) throw new PngFormatError('a second IHDR chunk');
        if (length !== 13) throw new PngFormatError(`IHDR has ${length} bytes, expected 13`);
        header = { width: u32(data, 0), height: u32(data, 4), bitDepth: data[8]!, colorType: data[9]!, interlaced: data[12] === 1 };
        const { width, height, bitDepth, colorType } = header;
        if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) throw new PngFormatError(`IHDR: image size ${width}×${height} is invalid`);
        if (!DEPTHS[colorType]?.includes(bitDepth)) throw new PngFormatError(`IHDR: colour type ${colorType} with bit depth ${bitDepth} is not a valid combination`);
        if (data[10] !== 0 || data[11] !== 0 || data[12]! > 1) {
          throw new PngFormatError(`IHDR: compression ${data[10]}, filter ${data[11]}, interlace ${data[12]}; expected 0, 0 and 0 or 1`);
        }
        break;
      }
      case 'PLTE':
        if (length === 0 || length % 3 !== 0 || length > 768) throw new PngFormatError(`PLTE has ${length} bytes, expected a multiple of 3 up to 768`);
        palette = data;
        break;
      case 'tRNS':
        transparency = data;
        break;
      case 'IDAT':
        if (idatClosed) throw new PngFormatError('IDAT chunks are not consecutive');
        idat.push(data);
        break;
      case 'IEND':
        sawEnd = true;
        break;
      default:
        if (critical) throw new PngFormatError(`unknown critical chunk ${type}`);
        ancillary.add(type);
    }
    at = end + 4;
    if (sawEnd) break;
  }
  if (!header) throw new PngFormatError('no IHDR chunk');
  if (idat.length === 0) throw new PngFormatError('no IDAT chunk (no image data)');
  if (!sawEnd) throw new PngFormatError('truncated: no IEND chunk');
  if (header.colorType === ColorType.Palette && !palette) throw new PngFormatError('palette image without a PLTE chunk');
  if (header.interlaced) unsupported ??= 'interlaced (Adam7)';
  if (header.bitDepth === 16) unsupported ??= '16 bits per sample';
  if (header.bitDepth < 8 && header.colorType !== ColorType.Palette) unsupported ??= `${header.bitDepth}-bit gray`;
  if (transparency && header.colorType !== ColorType.Palette) unsupported ??= 'tRNS colour-key transparency';
  return { header, ...(palette ? { palette } : {}), ...(transparency ? { transparency } : {}), idat, ancillary, unsupported };
}

/**
 * Undo the per-row filters of `raw` (rows of 1 filter byte + `stride` bytes) and return the
 * rows packed without filter bytes. `bpp` is bytes per complete pixel, at least 1 (the filter
 * unit for sub-byte depths). Loops split at `bpp`, where the left neighbour starts to exist, and
 * the first row (whose row above is all zeros) is handled apart, so the inner loops carry no
 * edge tests; offsets rather than subarray views, which cost more than a 28-byte row's work.
 */
function unfilter(raw: Uint8Array, height: number, stride: number, bpp: number): Uint8Array {
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const s = y * (stride + 1) + 1;
    const o = y * stride;
    const u = o - stride;
    let type = raw[s - 1]!;
    if (y === 0 && type >= 2 && type <= 4) type = type === 3 ? 5 : type === 4 ? 1 : 0;
    switch (type) {
      case 0:
        for (let i = 0; i < stride; i++) out[o + i] = raw[s + i]!;
        break;
      case 1:
        for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i]!;
        for (let i = bpp; i < stride; i++) out[o + i] = (raw[s + i]! + out[o + i - bpp]!) & 0xff;
        break;
      case 2:
        for (let i = 0; i < stride; i++) out[o + i] = (raw[s + i]! + out[u + i]!) & 0xff;
        break;
      case 3:
        for (let i = 0; i < bpp; i++) out[o + i] = (raw[s + i]! + (out[u + i]! >> 1)) & 0xff;
        for (let i = bpp; i < stride; i++) out[o + i] = (raw[s + i]! + ((out[o + i - bpp]! + out[u + i]!) >> 1)) & 0xff;
        break;
      case 4:
        // With no left neighbour Paeth picks the byte above.
        for (let i = 0; i < bpp; i++) out[o + i] = (raw[s + i]! + out[u + i]!) & 0xff;
        for (let i = bpp; i < stride; i++) {
          // Paeth predictor, inlined: the most common filter in real files and the costliest.
          const a = out[o + i - bpp]!;
          const b = out[u + i]!;
          const c = out[u + i - bpp]!;
          const pa = b > c ? b - c : c - b; // |p − a| with p = a + b − c
          const pb = a > c ? a - c : c - a; // |p − b|
          const pc = a + b - c - c > 0 ? a + b - c - c : c + c - a - b; // |p − c|
          out[o + i] = (raw[s + i]! + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 0xff;
        }
        break;
      case 5:
        // Average on the first row: the byte above is 0, so half the left neighbour.
        for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i]!;
        for (let i = bpp; i < stride; i++) out[o + i] = (raw[s + i]! + (out[o + i - bpp]! >> 1)) & 0xff;
        break;
      default:
        throw new PngFormatError(`row ${y}: filter type ${raw[s - 1]}, expected 0–4 (none, sub, up, average, paeth)`);
    }
  }
  return out;
}

/** Inflate, unfilter and (for palette images) expand a file `readPng` accepted as supported. */
export function decodePng(png: PngFile): PngPixels {
  if (png.unsupported) throw new Error(`decodePng: unsupported PNG (${png.unsupported}); check PngFile.unsupported first`);
  const { width, height, bitDepth, colorType } = png.header;
  const samples = SAMPLES[colorType]!;
  const stride = Math.ceil((width * samples * bitDepth) / 8);
  const expected = height * (stride + 1);
  const stream = png.idat.length === 1 ? png.idat[0]! : Buffer.concat(png.idat);
  let raw: Uint8Array;
  try {
    // One byte over lets "more data than the image needs" be told apart from "exactly enough".
    raw = zlib.inflateSync(stream, { maxOutputLength: expected + 1 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE') throw new PngFormatError(`IDAT: more image data than ${width}×${height} needs (${expected} bytes)`);
    throw new PngFormatError(`IDAT: the compressed image data is damaged or cut short (zlib: ${e.message})`);
  }
  if (raw.length < expected) throw new PngFormatError(`IDAT: ${raw.length} bytes of image data, expected ${expected} for ${width}×${height} (truncated)`);
  if (raw.length > expected) throw new PngFormatError(`IDAT: more image data than ${width}×${height} needs (${expected} bytes)`);
  const bpp = Math.max(1, (samples * bitDepth) >> 3);
  const rows = unfilter(raw, height, stride, bpp);
  if (colorType !== ColorType.Palette) return { data: rows, width, height, channels: samples };

  const pal = png.palette!;
  const entries = pal.length / 3;
  const trns = png.transparency;
  const channels = trns ? 4 : 3;
  const lut = new Uint8Array(256 * 4);
  for (let i = 0; i < entries; i++) {
    lut[i * 4] = pal[i * 3]!;
    lut[i * 4 + 1] = pal[i * 3 + 1]!;
    lut[i * 4 + 2] = pal[i * 3 + 2]!;
    lut[i * 4 + 3] = trns && i < trns.length ? trns[i]! : 255;
  }
  const out = new Uint8Array(width * height * channels);
  const perByte = 8 / bitDepth;
  const mask = (1 << bitDepth) - 1;
  let o = 0;
  for (let y = 0; y < height; y++) {
    const row = y * stride;
    for (let x = 0; x < width; x++) {
      const idx =
        bitDepth === 8 ? rows[row + x]! : (rows[row + Math.floor(x / perByte)]! >> (8 - bitDepth * ((x % perByte) + 1))) & mask;
      if (idx >= entries) throw new PngFormatError(`pixel (${x}, ${y}) uses palette index ${idx}, but PLTE has ${entries} entries`);
      out[o++] = lut[idx * 4]!;
      out[o++] = lut[idx * 4 + 1]!;
      out[o++] = lut[idx * 4 + 2]!;
      if (channels === 4) out[o++] = lut[idx * 4 + 3]!;
    }
  }
  return { data: out, width, height, channels };
}
