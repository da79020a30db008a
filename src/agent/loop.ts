// The device agent's work loop: classify images as they appear in a folder (a camera or another
// process drops them there), or re-run a folder over and over (--loop, a soak test or a demo),
// feeding every prediction to device telemetry, until the caller's AbortSignal fires.
//
// Watching is by polling the folder (recursively), not fs.watch: inotify misses files on network
// and some overlay filesystems, and a poll every few hundred ms costs nothing next to inference.
// A file is taken once its size is the same on two consecutive polls, so a half-written image is
// not read; files already there at start are taken too (the agent does not move or delete files,
// so a restart classifies the folder's backlog again). One unreadable image is logged and skipped;
// the agent carries on.
import { promises as fsp } from 'node:fs';
import type { BundleRunner, ClassifyItem, ClassifyOptions } from '../runtime/bundle-runner.js';
import type { DeviceTelemetry } from '../telemetry/device.js';
import { InputError, formatProblem } from '../util/errors.js';

export interface AgentLoopOptions {
  runner: BundleRunner;
  telemetry: DeviceTelemetry;
  folder: string;
  /** Re-run every image in the folder, pass after pass, instead of waiting for new ones. */
  loop?: boolean;
  pollMs?: number;
  classify: ClassifyOptions;
  /** Files per classify call (bounds decode memory and lets windows close on time). */
  chunk: number;
  /** Lists the images under a folder (sorted). */
  list: (folder: string) => Promise<string[]>;
  /** The label index a file's path implies, for accuracy. */
  labelOf: (file: string) => number | undefined;
  onLog: (line: string) => void;
  /** Told after each classify call. */
  onItems?: (items: readonly ClassifyItem[]) => void;
}

export interface AgentStats {
  classified: number;
  failed: number;
  /** Completed passes over the folder (--loop), else classify calls. */
  passes: number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Run until `signal` aborts; the caller closes telemetry and the runner.
 *
 * @example
 * ```ts
 * import { loadBundle, runAgentLoop, startDeviceTelemetry } from 'edgeexit';
 * import { readdir } from 'node:fs/promises';
 * import path from 'node:path';
 *
 * const runner = await loadBundle('bundles/branchy-rpi4');
 * const telemetry = await startDeviceTelemetry(runner, { url: 'mqtt://broker.local' });
 * const stop = new AbortController();
 * process.once('SIGTERM', () => stop.abort());
 * const stats = await runAgentLoop({
 *   runner, telemetry, folder: '/var/spool/camera', classify: {}, chunk: 64, onLog: console.error,
 *   list: async (dir) => (await readdir(dir)).sort().map((f) => path.join(dir, f)),
 *   labelOf: () => undefined,
 * }, stop.signal);
 * await telemetry.close();
 * await runner.close();
 * ```
 */
export async function runAgentLoop(o: AgentLoopOptions, signal: AbortSignal): Promise<AgentStats> {
  const st = await fsp.stat(o.folder).catch(() => undefined);
  if (!st?.isDirectory()) throw new InputError(formatProblem({ where: '--watch', expected: 'a folder to take images from', got: o.folder, fix: 'create it, or point --watch at an existing folder' }));
  const stats: AgentStats = { classified: 0, failed: 0, passes: 0 };
  const pollMs = o.pollMs ?? 250;

  const classify = async (files: readonly string[]): Promise<void> => {
    for (let i = 0; i < files.length && !signal.aborted; i += o.chunk) {
      const r = await o.runner.classify(files.slice(i, i + o.chunk), o.classify);
      for (const it of r.items) {
        if (!it.ok) {
          stats.failed++;
          o.onLog(`skipped ${it.name}: ${it.error.message}`);
          continue;
        }
        stats.classified++;
        const label = o.labelOf(it.name);
        o.telemetry.record(it, label === undefined ? undefined : it.classIndex === label);
      }
      o.onItems?.(r.items);
    }
  };

  if (o.loop) {
    while (!signal.aborted) {
      const files = await o.list(o.folder);
      if (files.length === 0) {
        await sleep(pollMs, signal);
        continue;
      }
      const before = stats.classified;
      await classify(files);
      if (!signal.aborted) stats.passes++;
      // A folder of unreadable files would otherwise spin (and log) as fast as it can fail.
      if (stats.classified === before) await sleep(pollMs, signal);
    }
    return stats;
  }

  // path → size at the last poll, -1 once taken; rebuilt each poll so deleted files are forgotten.
  let seen = new Map<string, number>();
  while (!signal.aborted) {
    const ready: string[] = [];
    const now = new Map<string, number>();
    for (const f of await o.list(o.folder)) {
      const prev = seen.get(f);
      if (prev === -1) {
        now.set(f, -1);
        continue;
      }
      const size = await fsp.stat(f).then((s) => s.size, () => undefined);
      if (size === undefined) continue; // gone again before we looked
      if (prev === size && size > 0) {
        ready.push(f);
        now.set(f, -1);
      } else now.set(f, size);
    }
    seen = now;
    if (ready.length > 0) {
      await classify(ready);
      stats.passes++;
    }
    await sleep(pollMs, signal);
  }
  return stats;
}
