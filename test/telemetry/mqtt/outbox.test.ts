import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Outbox } from '../../../src/telemetry/index.js';
import { InputError } from '../../../src/util/errors.js';
import { tempDir } from './fixtures.js';

const dirs: string[] = [];
async function fresh(): Promise<string> {
  const d = await tempDir('outbox');
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
});

describe('Outbox', () => {
  it('firstId numbers a new outbox from there; an existing log keeps its own ids', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir, { firstId: 5_000_000 });
    await a.close(); // reopened before any enqueue: the start is already on disk
    const b = await Outbox.open<{ n: number }>(dir, { firstId: 9_000_000 });
    expect(b.next).toBe(5_000_000);
    expect(await b.enqueue({ n: 0 })).toBe(5_000_000);
    expect(await b.enqueue({ n: 1 })).toBe(5_000_001);
    await b.close();
    const c = await Outbox.open<{ n: number }>(dir, { firstId: 1 });
    expect(await c.enqueue({ n: 2 })).toBe(5_000_002);
    await c.close();
  });

  it('bad input: a firstId that is not a non-negative safe integer is refused, naming it', async () => {
    for (const bad of [-1, 1.5, 2 ** 53]) {
      const err = await Outbox.open(await fresh(), { firstId: bad }).then(() => undefined, (e: unknown) => e as Error);
      expect(err).toBeInstanceOf(InputError);
      expect(err!.message).toMatch(new RegExp(`firstId must be a non-negative safe integer, got ${String(bad).replace('.', '\\.')}$`));
    }
  });

  it('keeps order, acks, and continues ids after a clean reopen', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir);
    expect(await a.enqueue({ n: 0 })).toBe(0);
    expect(await a.enqueue({ n: 1 })).toBe(1);
    expect(await a.enqueue({ n: 2 })).toBe(2);
    expect(a.peek(2)).toEqual([{ id: 0, body: { n: 0 } }, { id: 1, body: { n: 1 } }]);
    await a.ack([0, 99]);
    await a.ack([0]);
    expect(a.size()).toBe(2);
    await a.close();
    const b = await Outbox.open<{ n: number }>(dir);
    expect(b.peek(10).map((e) => e.id)).toEqual([1, 2]);
    expect(await b.enqueue({ n: 3 })).toBe(3);
    await b.close();
  });

  it('after a crash (no close) keeps unacked entries and continues ids', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir);
    for (let i = 0; i < 5; i++) await a.enqueue({ n: i });
    await a.ack([0, 1]);
    // The first instance is never closed: the second sees only what reached the file.
    const b = await Outbox.open<{ n: number }>(dir);
    expect(b.peek(10).map((e) => e.id)).toEqual([2, 3, 4]);
    expect(b.recovery).toEqual({ truncatedBytes: 0, skippedLines: 0 });
    expect(await b.enqueue({ n: 5 })).toBe(5);
    await b.close();
    await a.close();
  });

  it('repairs a torn last line and keeps working', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir);
    for (let i = 0; i < 3; i++) await a.enqueue({ n: i });
    await a.close();
    const file = path.join(dir, 'outbox.jsonl');
    const good = (await fsp.readFile(file)).length;
    await fsp.appendFile(file, '{"t":"a","ids":[0');
    const b = await Outbox.open<{ n: number }>(dir);
    expect(b.recovery.truncatedBytes).toBe('{"t":"a","ids":[0'.length);
    expect((await fsp.readFile(file)).length).toBe(good);
    expect(b.peek(10).map((e) => e.id)).toEqual([0, 1, 2]); // the torn ack never happened
    expect(await b.enqueue({ n: 3 })).toBe(3);
    await b.close();
    const c = await Outbox.open<{ n: number }>(dir);
    expect(c.peek(10).map((e) => e.id)).toEqual([0, 1, 2, 3]);
    await c.close();
  });

  it('truncates a complete but corrupt last line, skips a corrupt middle one', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir);
    await a.enqueue({ n: 0 });
    await a.close();
    const file = path.join(dir, 'outbox.jsonl');
    await fsp.appendFile(file, 'garbage\n{"t":"e","id":1,"body":{"n":1}}\n{"t":"e","id":2,"bo\n');
    const b = await Outbox.open<{ n: number }>(dir);
    expect(b.recovery.skippedLines).toBe(1);
    expect(b.recovery.truncatedBytes).toBeGreaterThan(0);
    expect(b.peek(10).map((e) => e.id)).toEqual([0, 1]);
    await b.close();
  });

  it('when full drops the oldest and counts them, across reopen', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir, { maxEntries: 3 });
    for (let i = 0; i < 5; i++) await a.enqueue({ n: i });
    expect(a.peek(10).map((e) => e.id)).toEqual([2, 3, 4]);
    expect(a.dropped).toBe(2);
    await a.close();
    const b = await Outbox.open<{ n: number }>(dir, { maxEntries: 3 });
    expect(b.dropped).toBe(2);
    await b.close();

    const bytesBox = await Outbox.open<{ s: string }>(await fresh(), { maxBytes: 100 });
    for (let i = 0; i < 4; i++) await bytesBox.enqueue({ s: 'x'.repeat(30) });
    expect(bytesBox.size()).toBe(2);
    expect(bytesBox.dropped).toBe(2);
    await expect(bytesBox.enqueue({ s: 'x'.repeat(200) })).rejects.toThrow(InputError);
    await bytesBox.close();
  });

  it('compacts the log without losing ids or the drop counter', async () => {
    const dir = await fresh();
    const a = await Outbox.open<{ n: number }>(dir, { compactAfter: 10, maxEntries: 50 });
    for (let i = 0; i < 60; i++) await a.enqueue({ n: i });
    const ids = a.peek(45).map((e) => e.id);
    await a.ack(ids);
    const lines = (await fsp.readFile(path.join(dir, 'outbox.jsonl'), 'utf8')).trim().split('\n');
    expect(lines.length).toBe(1 + 5); // header + live entries
    await a.close();
    const b = await Outbox.open<{ n: number }>(dir, { compactAfter: 10 });
    expect(b.size()).toBe(5);
    expect(b.dropped).toBe(10);
    expect(await b.enqueue({ n: 60 })).toBe(60);
    await b.ack(b.peek(10).map((e) => e.id));
    await b.close();
    const c = await Outbox.open<{ n: number }>(dir);
    expect(c.size()).toBe(0);
    expect(c.next).toBe(61);
    await c.close();
  });
});

describe('Outbox under SIGKILL', () => {
  it('a process killed mid-stream leaves every reported enqueue, no reported ack, and continuing ids', async () => {
    const { spawn } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const here = path.dirname(fileURLToPath(import.meta.url));
    const dir = await fresh();
    const child = spawn(path.resolve(here, '../../../node_modules/.bin/vite-node'), [path.join(here, 'outbox-child.ts'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // 'close', not 'exit': the last reports may still sit in the pipe when the process is gone, and
    // a missed "a" line would make an acked entry look unacked.
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const deadline = Date.now() + 30_000;
    while ((out.match(/^e /gm)?.length ?? 0) < 300) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`child stopped early: ${err}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGKILL');
    await exited;
    // Only whole lines count: the kill can cut the last report short.
    const lines = out.slice(0, out.lastIndexOf('\n')).split('\n');
    const enqueued = new Set<number>();
    const acked = new Set<number>();
    for (const l of lines) {
      const [op, ...ids] = l.split(' ');
      for (const id of ids.map(Number)) (op === 'e' ? enqueued : acked).add(id);
    }
    const box = await Outbox.open<{ n: number }>(dir);
    const live = new Set(box.peek(1_000_000).map((e) => e.id));
    // The kill may fall after an ack reached the disk but before the child reported it: only the
    // two oldest unreported entries (that ack's targets) may be gone; every other one must be kept.
    const unacked = [...enqueued].filter((id) => !acked.has(id)).sort((a, b) => a - b);
    const missing = unacked.filter((id) => !live.has(id));
    expect(missing, `unacked entries lost`).toEqual(unacked.slice(0, missing.length));
    expect(missing.length).toBeLessThanOrEqual(2);
    for (const id of acked) expect(live.has(id), `acked ${id} gone`).toBe(false);
    expect(box.next).toBeGreaterThan(Math.max(...enqueued));
    expect(box.recovery.skippedLines).toBe(0);
    const id = await box.enqueue({ n: -1 });
    expect(id).toBe(box.next - 1);
    await box.close();
  });
});
