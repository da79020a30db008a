// Hard-linking instead of writing (util/fs.ts): a link only when the source holds exactly the
// bytes asked for, nothing left behind when it does not, and a write as the fallback.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { linkIfSame, linkOrWriteAtomic } from '../../src/util/fs.js';
import { scratch } from '../compiler/helpers.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('linkIfSame / linkOrWriteAtomic', () => {
  it('links when the source holds the same bytes: one inode, two names', async () => {
    const dir = await scratch('fs-link');
    const from = path.join(dir, 'a.onnx');
    await fsp.writeFile(from, bytes('stage bytes'));
    expect(await linkIfSame(path.join(dir, 'b.onnx'), bytes('stage bytes'), from)).toBe(true);
    const [a, b] = await Promise.all([fsp.stat(from), fsp.stat(path.join(dir, 'b.onnx'))]);
    expect(b.ino).toBe(a.ino);
    expect(a.nlink).toBe(2);
  });

  it('does not link other bytes, a missing source or onto an existing name, and leaves nothing behind', async () => {
    const dir = await scratch('fs-link');
    const from = path.join(dir, 'a.onnx');
    await fsp.writeFile(from, bytes('stage bytes'));
    expect(await linkIfSame(path.join(dir, 'b.onnx'), bytes('other bytes'), from)).toBe(false);
    expect(await linkIfSame(path.join(dir, 'c.onnx'), bytes('stage bytes'), path.join(dir, 'gone.onnx'))).toBe(false);
    await fsp.writeFile(path.join(dir, 'd.onnx'), bytes('keep me'));
    expect(await linkIfSame(path.join(dir, 'd.onnx'), bytes('stage bytes'), from)).toBe(false);
    expect((await fsp.readdir(dir)).sort()).toEqual(['a.onnx', 'd.onnx']);
    expect(await fsp.readFile(path.join(dir, 'd.onnx'), 'utf8')).toBe('keep me');
    expect((await fsp.stat(from)).nlink).toBe(1);
  });

  it('linkOrWriteAtomic links, else writes the bytes (replacing the target), with no temp file left', async () => {
    const dir = await scratch('fs-link');
    const from = path.join(dir, 'a.onnx');
    await fsp.writeFile(from, bytes('stage bytes'));
    await fsp.writeFile(path.join(dir, 'x.onnx'), bytes('old'));
    expect(await linkOrWriteAtomic(path.join(dir, 'x.onnx'), bytes('stage bytes'), from)).toBe('linked');
    expect((await fsp.stat(path.join(dir, 'x.onnx'))).ino).toBe((await fsp.stat(from)).ino);
    expect(await linkOrWriteAtomic(path.join(dir, 'y.onnx'), bytes('new bytes'), from)).toBe('written');
    expect(await fsp.readFile(path.join(dir, 'y.onnx'), 'utf8')).toBe('new bytes');
    expect((await fsp.stat(path.join(dir, 'y.onnx'))).ino).not.toBe((await fsp.stat(from)).ino);
    expect((await fsp.readdir(dir)).sort()).toEqual(['a.onnx', 'x.onnx', 'y.onnx']);
  });
});
