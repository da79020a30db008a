import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import {
  FASHION_MNIST_CLASSES,
  encodeIdx,
  loadFashionMnist,
  readIdxDataset,
  readIdxImages,
  readIdxLabels,
} from '../../src/data/idx.js';
import { InputError } from '../../src/util/errors.js';
import { FASHION_MNIST } from '../support/require.js';

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-idx-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const pixels = Uint8Array.from({ length: 3 * 2 * 4 }, (_, i) => (i * 37) % 256);
const labels = Uint8Array.from([2, 0, 1]);

async function write(name: string, bytes: Uint8Array): Promise<string> {
  const file = path.join(dir, name);
  await fsp.writeFile(file, bytes);
  return file;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

describe('IDX round trip', () => {
  it('reads plain idx3/idx1 files written by encodeIdx', async () => {
    const img = await write('plain-images-idx3-ubyte', encodeIdx([3, 2, 4], pixels));
    const lab = await write('plain-labels-idx1-ubyte', encodeIdx([3], labels));
    const images = await readIdxImages(img);
    expect(images).toMatchObject({ count: 3, rows: 2, cols: 4 });
    expect(Array.from(images.pixels)).toEqual(Array.from(pixels));
    expect(Array.from(await readIdxLabels(lab))).toEqual([2, 0, 1]);
  });

  it('reads gzipped files, detected by magic bytes rather than by name', async () => {
    const gz = await write('images.gz', zlib.gzipSync(encodeIdx([3, 2, 4], pixels)));
    const noExt = await write('labels-without-gz-extension', zlib.gzipSync(encodeIdx([3], labels)));
    const ds = await readIdxDataset(gz, noExt);
    expect(ds.images.count).toBe(3);
    expect(Array.from(ds.images.pixels)).toEqual(Array.from(pixels));
    expect(Array.from(ds.labels)).toEqual([2, 0, 1]);
  });

  it('writes the standard MNIST header', () => {
    const bytes = encodeIdx([3, 2, 4], pixels);
    expect(Array.from(bytes.subarray(0, 16))).toEqual([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 4]);
  });
});

describe('IDX bad input', () => {
  it('wrong magic: names the file, the expected magic and the bytes found', async () => {
    const file = await write('zip-not-idx', Uint8Array.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0]));
    const err = await rejection(readIdxImages(file));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `${file}: not an IDX file (idx3 images) expected magic 00 00 08 03 got 50 4b 03 04` +
        ' (fix: pass an uncompressed or gzipped IDX file such as t10k-images-idx3-ubyte.gz)',
    );
  });

  it('labels file where images are expected: rank mismatch', async () => {
    const file = await write('rank-labels', encodeIdx([3], labels));
    const err = await rejection(readIdxImages(file));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain(`${file}: wrong IDX rank for idx3 images expected magic 00 00 08 03 (3 dimensions)`);
    expect(err.message).toContain('got 00 00 08 01 (1 dimension)');
  });

  it('non-uint8 element type is refused', async () => {
    const bytes = encodeIdx([3], labels);
    bytes[2] = 0x0d;
    const file = await write('float-labels', bytes);
    const err = await rejection(readIdxLabels(file));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain('unsupported IDX element type 0x0d (float32)');
  });

  it('truncated data: expected and actual payload sizes', async () => {
    const full = encodeIdx([3, 2, 4], pixels);
    const file = await write('truncated-images', full.subarray(0, full.length - 5));
    const err = await rejection(readIdxImages(file));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `${file}: truncated IDX data expected 24 payload bytes (3×2×4) after the 16-byte header got 19` +
        ' (fix: the file is incomplete; download or copy it again)',
    );
  });

  it('truncated header', async () => {
    const file = await write('short-header', Uint8Array.from([0, 0, 8, 3, 0, 0]));
    const err = await rejection(readIdxImages(file));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(`${file}: truncated IDX header expected 16 header bytes for 3 dimensions got 6 bytes`);
  });

  it('truncated gzip stream', async () => {
    const gz = zlib.gzipSync(encodeIdx([3, 2, 4], pixels));
    const file = await write('cut.gz', gz.subarray(0, gz.length - 12));
    const err = await rejection(readIdxImages(file));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: corrupt or truncated gzip data`));
  });

  it('image/label count mismatch names both files and both counts', async () => {
    const img = await write('mm-images', encodeIdx([3, 2, 4], pixels));
    const lab = await write('mm-labels', encodeIdx([2], labels.subarray(0, 2)));
    const err = await rejection(readIdxDataset(img, lab));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `${img} + ${lab}: image/label count mismatch expected 3 labels (one per image in mm-images) got 2 labels in mm-labels` +
        ' (fix: pair the images file with the labels file of the same split)',
    );
  });

  it('missing file', async () => {
    const err = await rejection(readIdxLabels(path.join(dir, 'nope')));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(`${path.join(dir, 'nope')}: file not found`);
  });
});

describe('loadFashionMnist', () => {
  it('says how to install the dataset when it is absent', async () => {
    const empty = path.join(dir, 'no-fmnist');
    await fsp.mkdir(empty);
    const err = await rejection(loadFashionMnist('test', empty));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain(path.join(empty, 't10k-images-idx3-ubyte.gz'));
    expect(err.message).toContain('apt-get install dataset-fashion-mnist');
  });

  it('reads a split from a folder holding plain and gzipped files', async () => {
    const d = path.join(dir, 'mini-fmnist');
    await fsp.mkdir(d);
    await fsp.writeFile(path.join(d, 'train-images-idx3-ubyte.gz'), zlib.gzipSync(encodeIdx([3, 2, 4], pixels)));
    await fsp.writeFile(path.join(d, 'train-labels-idx1-ubyte'), encodeIdx([3], labels));
    const fm = await loadFashionMnist('train', d);
    expect(fm.images.count).toBe(3);
    expect(fm.classes).toBe(FASHION_MNIST_CLASSES);
    expect(fm.labelsFile).toBe(path.join(d, 'train-labels-idx1-ubyte'));
  });

  FASHION_MNIST.it(
    "reads Debian's Fashion-MNIST test split",
    async () => {
      const fm = await loadFashionMnist('test');
      expect(fm.images).toMatchObject({ count: 10000, rows: 28, cols: 28 });
      expect(fm.images.pixels.length).toBe(10000 * 784);
      const perClass = new Array(10).fill(0);
      for (const l of fm.labels) perClass[l]++;
      expect(perClass).toEqual(new Array(10).fill(1000));
    },
  );
});
