// Shared test plumbing for the energy meters: fixture paths, a temp copy of a fixture tree for
// tests that change values between reads, a hand-driven clock and a fake `exec` that replays
// recorded command outputs.
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { vi } from 'vitest';
import type { Exec } from '../../src/telemetry/energy/index.js';

export const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/telemetry');

export function fixture(name: string): string {
  return path.join(FIXTURES, name);
}

export function fixtureText(name: string): string {
  return readFileSync(fixture(name), 'utf8');
}

/** Copy a fixture tree to a fresh temp dir and return the copy's root. */
export async function tempTree(name: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `edgeexit-energy-${name}-`));
  await fsp.cp(fixture(name), dir, { recursive: true });
  return dir;
}

export function fakeClock(start = 1000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

/** Replays outputs per command; an unknown command rejects like a missing binary (ENOENT). */
export function fakeExec(outputs: Record<string, string | (() => string) | Error>): Exec & { calls: string[][] } {
  const calls: string[][] = [];
  const exec = (async (cmd: string, args: readonly string[]) => {
    calls.push([cmd, ...args]);
    const out = outputs[cmd];
    if (out === undefined) throw Object.assign(new Error(`spawn ${cmd} ENOENT`), { code: 'ENOENT' });
    if (out instanceof Error) throw out;
    return typeof out === 'function' ? out() : out;
  }) as Exec & { calls: string[][] };
  exec.calls = calls;
  return exec;
}

/**
 * Make reads of `file` fail with EACCES, as the kernel answers for root-only sysfs files; chmod
 * cannot do it because tests may run as root. Returns the restore function.
 */
export function denyRead(file: string): () => void {
  const real = fsp.readFile;
  const spy = vi.spyOn(fsp, 'readFile').mockImplementation((async (p: unknown, ...rest: unknown[]) => {
    if (p === file) throw Object.assign(new Error(`EACCES: permission denied, open '${file}'`), { code: 'EACCES' });
    return (real as (...a: unknown[]) => Promise<unknown>)(p, ...rest);
  }) as typeof fsp.readFile);
  return () => spy.mockRestore();
}
