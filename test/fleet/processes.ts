// Child processes for the fault tests (delivery.test.ts, fanout.test.ts): a script run from
// source with vite-node, its output kept, killed -9 as a crash would.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
const VITE_NODE = path.join(ROOT, 'node_modules', '.bin', 'vite-node');

export interface Proc {
  proc: ChildProcess;
  exited: Promise<number | null>;
  stderr: () => string;
  stdout: () => string;
}

/** Run `script` (a path from the repository root) with `args`; stdout and stderr are collected. */
export function spawnChild(script: string, args: string[]): Proc {
  const proc = spawn(VITE_NODE, [path.join(ROOT, script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // 'close', not 'exit': the pipes are read to the end.
  const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)));
  return { proc, exited, stderr: () => err, stdout: () => out };
}

/** SIGKILL the child (if it still runs) and wait until it is gone. */
export async function kill9(p: Proc | undefined): Promise<void> {
  if (!p || p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  p.proc.kill('SIGKILL');
  await p.exited;
}
