// The ustar writer/reader: round trips, interoperability with the system tar, and refusal of
// damaged, truncated or unsafe archives.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError } from '../../src/util/errors.js';
import { looksLikeTar, readTar, writeTar } from '../../src/bundle/index.js';
import { scratch } from '../compiler/helpers.js';
import { TAR } from '../support/require.js';

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe('ustar writer and reader', () => {
  it('round-trips files of awkward sizes and long paths, with folder entries', () => {
    const long = `${'a'.repeat(90)}/${'b'.repeat(60)}/file-with-a-long-name-${'c'.repeat(60)}.onnx`;
    const entries = [
      { name: 'bundle/manifest.json', data: new TextEncoder().encode('{"a":1}\n') },
      { name: 'bundle/empty', data: new Uint8Array(0) },
      { name: 'bundle/exact', data: bytes(512, 1) },
      { name: 'bundle/odd', data: bytes(1025, 2) },
      { name: long, data: bytes(3, 3) },
    ];
    const tar = writeTar(entries.map((e) => ({ ...e, mtime: 1_700_000_000 })));
    expect(tar.length % 512).toBe(0);
    expect(looksLikeTar(tar)).toBe(true);
    const back = readTar(tar, 'x.tar');
    expect(back.map((e) => e.name)).toEqual(entries.map((e) => e.name));
    back.forEach((e, i) => expect(Buffer.from(e.data).equals(Buffer.from(entries[i]!.data))).toBe(true));
    expect(back[0]!.mode).toBe(0o644);
  });

  it('writes archives the system tar reads (and reads what it lists)', async () => {
    const dir = await scratch('tar');
    const file = path.join(dir, 'a.tar');
    await fsp.writeFile(file, writeTar([{ name: 'b/one.txt', data: new TextEncoder().encode('one\n') }, { name: 'b/two.bin', data: bytes(700, 5) }]));
    const listing = execFileSync(TAR.get(), ['-tvf', file], { encoding: 'utf8' });
    expect(listing).toMatch(/b\/one\.txt/);
    expect(listing).toMatch(/700 .*b\/two\.bin/);
    execFileSync(TAR.get(), ['-xf', file, '-C', dir]);
    expect(await fsp.readFile(path.join(dir, 'b', 'one.txt'), 'utf8')).toBe('one\n');
  });

  it('refuses damaged, truncated and unsafe archives with an InputError naming the archive', () => {
    const tar = writeTar([{ name: 'b/f', data: bytes(600, 7) }]);
    const flipped = tar.slice();
    flipped[512 + 10] = flipped[512 + 10]! ^ 0xff; // a byte in the file's header name
    expect(() => readTar(flipped, 'x.tar')).toThrow(/x\.tar: tar header at byte 512 has checksum/);
    expect(() => readTar(tar.slice(0, 1100), 'x.tar')).toThrow(/x\.tar: 'b\/f' needs 600 bytes.*truncated/);
    expect(() => readTar(tar.slice(0, 512 * 4), 'x.tar')).toThrow(InputError);
    expect(() => writeTar([{ name: '../evil', data: new Uint8Array(1) }])).toThrow(/unsafe path/);
    // Hand-make a header with an unsafe name (and a valid checksum): the reader must refuse it too.
    const evil = writeTar([{ name: 'ok', data: new Uint8Array(1) }]);
    evil.set(new TextEncoder().encode('../x'), 0);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : evil[i]!;
    evil.set(new TextEncoder().encode(sum.toString(8).padStart(6, '0') + '\0 '), 148);
    expect(() => readTar(evil, 'evil.tar')).toThrow(/evil\.tar: unsafe path/);
  });
});
