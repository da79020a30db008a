import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { folderNameForLabel, scanImageFolder } from '../../src/data/imagefolder.js';
import { LABEL_MATCH_RULE, labelMatcher, renameHints } from '../../src/data/labels.js';
import { prepareBatch } from '../../src/backends/image.js';
import { InputError } from '../../src/util/errors.js';

let root: string;
beforeAll(async () => {
  root = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-imagefolder-'));
});
afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

/** A solid-gray PNG, encoded by sharp. */
function png(value: number, size = 8): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: { r: value, g: value, b: value } } })
    .png()
    .toBuffer();
}

async function tree(name: string, files: Record<string, Uint8Array | string>): Promise<string> {
  const dir = path.join(root, name);
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(dir, rel);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, content);
  }
  return dir;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

describe('scanImageFolder', () => {
  it('alphabetical classes, deterministic file order, only image files', async () => {
    const img = await png(10);
    const dir = await tree('alpha', {
      'shoe/b.png': img,
      'shoe/a.JPG': img,
      'shoe/10.webp': img,
      'shoe/2.jpeg': img,
      'shoe/notes.txt': 'not an image',
      'shoe/.hidden.png': img,
      'shoe/nested/c.png': img,
      'bag/x.png': img,
      '.git/HEAD.png': img,
    });
    const f = await scanImageFolder(dir);
    expect(f.classes).toEqual(['bag', 'shoe']);
    expect(f.counts).toEqual([1, 5]);
    expect(f.items.map((i) => [path.relative(dir, i.file), i.label])).toEqual([
      ['bag/x.png', 0],
      ['shoe/10.webp', 1],
      ['shoe/2.jpeg', 1],
      ['shoe/a.JPG', 1],
      ['shoe/b.png', 1],
      ['shoe/nested/c.png', 1],
    ]);
  });

  it('class order from a labels list; labels without a folder have no samples', async () => {
    const img = await png(10);
    const dir = await tree('labelled', { 'light/1.png': img, 'dark/1.png': img, 'dark/2.png': img });
    const f = await scanImageFolder(dir, { labels: ['light', 'medium', 'dark'] });
    expect(f.classes).toEqual(['light', 'medium', 'dark']);
    expect(f.counts).toEqual([1, 0, 2]);
    expect(f.items.map((i) => i.label)).toEqual([0, 2, 2]);
  });

  it("labels with a '/' are matched by their folder-safe name", async () => {
    expect(folderNameForLabel('T-shirt/top')).toBe('T-shirt_top');
    const dir = await tree('slash', { 'T-shirt_top/1.png': await png(1), 'Trouser/1.png': await png(2) });
    const f = await scanImageFolder(dir, { labels: ['T-shirt/top', 'Trouser'] });
    expect(f.items.map((i) => i.label)).toEqual([0, 1]);
  });

  it('a folder that is not a label: error states the rule, lists the labels and gives a hint for every such folder', async () => {
    const img = await png(10);
    const dir = await tree('unknown', { 'Dark/1.png': img, 'ligth/1.png': img, 'cats/1.png': img, 'ankle-boot/1.png': img });
    const err = await rejection(scanImageFolder(dir, { labels: ['dark', 'light', 'Ankle boot', 'bag'] }));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `${dir}: subfolders "cats", "ligth" match no label of the model (${LABEL_MATCH_RULE})` +
        ` expected subfolders named after the labels: "dark", "light", "Ankle boot", "bag" got "Dark", "ankle-boot", "cats", "ligth"` +
        ` (fix: rename "cats" to one of "light", "bag" (labels with no folder) or remove it; rename "ligth" to "light")`,
    );
  });

  it('one rule: case, separators and punctuation do not matter; exact names win over loose ones', async () => {
    const img = await png(10);
    const labels = ['T-shirt/top', 'Ankle boot', 'a-b', 'ab'];
    const dir = await tree('rule', { 'tshirt_top/1.png': img, 'ANKLE_BOOT/1.png': img, 'a-b/1.png': img, 'ab/1.png': img });
    const f = await scanImageFolder(dir, { labels });
    expect(f.counts).toEqual([1, 1, 1, 1]);
    const m = labelMatcher(labels);
    expect(['T-shirt_top', 'T-shirt top', 't_shirt-top', 'Ankle-Boot'].map((n) => m.indexOf(n))).toEqual([0, 0, 0, 1]);
    // 'a-b' and 'ab' share a loose form: only their exact names tell them apart.
    expect([m.indexOf('a-b'), m.indexOf('ab'), m.indexOf('A_B')]).toEqual([2, 3, undefined]);
    expect(renameHints(['T-shirt', 'ankle'], labels)).toEqual(['rename "T-shirt" to "T-shirt_top"', 'rename "ankle" to "Ankle boot"']);
  });

  it('an empty class folder is named with what was expected', async () => {
    const dir = await tree('empty-class', { 'a/1.png': await png(1), 'b/readme.txt': 'no images here' });
    const err = await rejection(scanImageFolder(dir));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `${path.join(dir, 'b')}: class folder holds no images expected at least one .png/.jpg/.jpeg/.webp file got none` +
        ' (fix: add images for this class or remove the folder)',
    );
  });

  it('images directly in the root, no class folders', async () => {
    const dir = await tree('flat', { '1.png': await png(1), '2.png': await png(2) });
    const err = await rejection(scanImageFolder(dir));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain(`${dir}: no class subfolders`);
    expect(err.message).toContain(`got 2 image file(s) directly in ${dir}`);
  });

  it('missing root', async () => {
    const err = await rejection(scanImageFolder(path.join(root, 'does-not-exist')));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain('does-not-exist: folder not found');
  });

  it('a corrupt image is reported by name while the rest are decoded', async () => {
    const dir = await tree('corrupt', {
      'dark/a.png': await png(0),
      'dark/b.png': Buffer.from('this is not a png at all'),
      'light/a.png': await png(255),
    });
    const f = await scanImageFolder(dir);
    const batch = await prepareBatch(
      f.items.map((i) => i.file),
      { colorspace: 'gray', size: [4, 4], scale: 1, mean: [0], std: [1] },
    );
    expect(batch.tensor.dims).toEqual([2, 1, 4, 4]);
    expect(batch.indices).toEqual([0, 2]);
    expect(batch.failures).toHaveLength(1);
    const fail = batch.failures[0]!;
    expect(fail.index).toBe(1);
    expect(fail.name).toBe(path.join(dir, 'dark/b.png'));
    expect(fail.error).toBeInstanceOf(InputError);
    expect(fail.error.message).toMatch(/dark\/b\.png: cannot decode image \(.+\) expected a PNG, JPEG or WebP image/);
    expect(Array.from(batch.tensor.data.subarray(0, 16))).toEqual(new Array(16).fill(0));
    expect(Array.from(batch.tensor.data.subarray(16))).toEqual(new Array(16).fill(255));
  });
});
