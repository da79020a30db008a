// Hard-linking instead of writing (util/fs.ts): a link only when the source holds exactly the
// bytes asked for, nothing left behind when it does not, and a write as the fallback.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { linkAtomicIf, linkIfSame } from '../../src/util/fs.js';
import { scratch } from '../compiler/helpers.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('linkIfSame / linkAtomicIf', () => {
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

  it('linkAtomicIf links over an existing name when the bytes are accepted; refused bytes leave the target as it was, with no temp file left', async () => {
    const dir = await scratch('fs-link');
    const from = path.join(dir, 'a.onnx');
    await fsp.writeFile(from, bytes('stage bytes'));
    await fsp.writeFile(path.join(dir, 'x.onnx'), bytes('old'));
    const same = (want: string) => (got: Buffer) => got.toString() === want;
    expect(await linkAtomicIf(path.join(dir, 'x.onnx'), from, same('stage bytes'))).toBe(true);
    expect((await fsp.stat(path.join(dir, 'x.onnx'))).ino).toBe((await fsp.stat(from)).ino);
    await fsp.writeFile(path.join(dir, 'y.onnx'), bytes('keep'));
    expect(await linkAtomicIf(path.join(dir, 'y.onnx'), from, same('new bytes'))).toBe(false);
    expect(await fsp.readFile(path.join(dir, 'y.onnx'), 'utf8')).toBe('keep');
    expect((await fsp.stat(path.join(dir, 'y.onnx'))).ino).not.toBe((await fsp.stat(from)).ino);
    expect(await linkAtomicIf(path.join(dir, 'z.onnx'), path.join(dir, 'gone.onnx'), () => true)).toBe(false);
    expect((await fsp.readdir(dir)).sort()).toEqual(['a.onnx', 'x.onnx', 'y.onnx']);
  });
});
