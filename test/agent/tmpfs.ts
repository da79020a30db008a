// A real small filesystem for disk-full tests: a tmpfs of a few MB mounted in a private mount
// namespace (`unshare -m`), so nothing outside the child process ever sees it and it vanishes with
// the child. Needs root (CAP_SYS_ADMIN); without it the tests skip, or fail under CI=true.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { need } from '../support/require.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const MOUNT_THEN_RUN = 'mount -t tmpfs -o "size=$1" edgeexit-test "$0" && shift && exec "$@"';

/** Whether `unshare -m` may mount a tmpfs here: the reason it cannot, or undefined. */
function probe(unshare: string): string | undefined {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-probe-'));
  try {
    const r = spawnSync(unshare, ['-m', '--propagation', 'private', 'sh', '-c', MOUNT_THEN_RUN, dir, '1m', 'true'], { encoding: 'utf8' });
    if (r.status === 0) return undefined;
    return `cannot mount a tmpfs in a private mount namespace (${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}); run the tests as root, or in a container with --cap-add SYS_ADMIN`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const UNSHARE_TMPFS = need({ what: 'unshare -m with a tmpfs mount', apt: 'util-linux', paths: ['/usr/bin/unshare', '/bin/unshare'], check: probe });

/**
 * Run a TypeScript file (through vite-node) with a fresh tmpfs of `size` (mount's syntax: `6m`)
 * mounted at `mount`, visible to it alone; resolves with its exit code and output.
 */
export function runOnTmpfs(mount: string, size: string, script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const viteNode = path.resolve(here, '../../node_modules/.bin/vite-node');
  const child = spawn(UNSHARE_TMPFS.get(), ['-m', '--propagation', 'private', 'sh', '-c', MOUNT_THEN_RUN, mount, size, viteNode, script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}
