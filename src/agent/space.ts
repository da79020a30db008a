// Free space on the device before and while a bundle is staged. A device's store usually shares
// its filesystem with the telemetry outbox and the journal; a download that fills it would leave
// the device unable to record what it is doing. So staging is refused up front when the space is
// plainly not there, and a write that still hits a full disk (something else filled it meanwhile)
// is turned into the same clear refusal, after the caller removed what it had staged.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { EdgeExitError, formatProblem } from '../util/errors.js';

/**
 * Space kept free beyond a bundle's own bytes: room for the journal, the outbox and the
 * filesystem's per-file overhead, so staging never takes a disk to its last byte.
 */
export const SPACE_MARGIN_BYTES = 1024 * 1024;

/**
 * Free bytes on the filesystem holding `dir` (or its nearest existing parent), as an unprivileged writer sees them.
 *
 * @example
 * ```ts
 * import { freeBytes } from 'edgeexit/agent';
 * console.log(await freeBytes('/var/lib/edgeexit')); // 1834217472
 * ```
 */
export async function freeBytes(dir: string): Promise<number> {
  let at = path.resolve(dir);
  for (;;) {
    try {
      const s = await fsp.statfs(at);
      return s.bavail * s.bsize;
    } catch (err) {
      const parent = path.dirname(at);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === at) throw err;
      at = parent;
    }
  }
}

/**
 * True for the errors a full filesystem or an exhausted quota raises.
 *
 * @example
 * ```ts
 * import { isDiskFull } from 'edgeexit/agent';
 * await fsp.writeFile(file, data).catch((err) => { if (isDiskFull(err)) console.error('disk full'); throw err; });
 * ```
 */
export function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

const FIX = 'free space on that filesystem (remove old files or bundles), or put the store on a larger one (--root or EDGEEXIT_STORE)';

const mb = (b: number): string => `${(b / 1_000_000).toFixed(2)} MB`;

/**
 * Staging was refused for lack of space; `reason` is the one line to report (folder, bytes needed
 * and free, the fix).
 *
 * @example
 * ```ts
 * import { DiskFullError, ensureFreeSpace } from 'edgeexit/agent';
 * try { await ensureFreeSpace('/var/lib/edgeexit', 20e6, 'bundle 3f2a…'); } catch (err) { if (err instanceof DiskFullError) report(err.reason); }
 * ```
 */
export class DiskFullError extends EdgeExitError {
  constructor(
    readonly reason: string,
    readonly dir: string,
    readonly neededBytes: number,
    readonly freeBytes: number,
    options?: { cause?: unknown },
  ) {
    super(reason, [], options);
  }
}

/**
 * The refusal (a DiskFullError, not thrown) when the filesystem of `dir` has less than `needed`
 * bytes plus the margin free, else undefined. `what` names what would be staged, for the message.
 *
 * @example
 * ```ts
 * import { spaceShortfall } from 'edgeexit/agent';
 * const full = await spaceShortfall('/var/lib/edgeexit/bundles', 20_000_000, 'bundle 3f2a1c…');
 * if (full) console.error(full.reason);
 * ```
 */
export async function spaceShortfall(dir: string, needed: number, what: string, margin = SPACE_MARGIN_BYTES): Promise<DiskFullError | undefined> {
  const free = await freeBytes(dir);
  if (free >= needed + margin) return undefined;
  const reason = formatProblem({
    where: dir,
    message: `not enough free space to stage ${what}: needs ${needed} bytes (${mb(needed)}) plus ${mb(margin)} kept free, ${free} bytes (${mb(free)}) free`,
    fix: FIX,
  });
  return new DiskFullError(reason, dir, needed + margin, free);
}

/**
 * spaceShortfall, thrown.
 *
 * @example
 * ```ts
 * import { ensureFreeSpace } from 'edgeexit/agent';
 * await ensureFreeSpace('/var/lib/edgeexit/staging/42', 20_000_000, 'bundle 3f2a1c…');
 * ```
 */
export async function ensureFreeSpace(dir: string, needed: number, what: string, margin = SPACE_MARGIN_BYTES): Promise<void> {
  const full = await spaceShortfall(dir, needed, what, margin);
  if (full) throw full;
}

/**
 * The refusal for a write that hit a full disk although the check before passed (something else
 * filled it meanwhile); call it after removing what was staged, so `free` is what is left then.
 *
 * @example
 * ```ts
 * import { diskFullDuringWrite, isDiskFull } from 'edgeexit/agent';
 * try { await write(); } catch (err) { if (isDiskFull(err)) throw await diskFullDuringWrite(dir, bytes, 'bundle 3f2a…', err); throw err; }
 * ```
 */
export async function diskFullDuringWrite(dir: string, needed: number, what: string, cause: unknown): Promise<DiskFullError> {
  const free = await freeBytes(dir).catch(() => 0);
  const code = (cause as NodeJS.ErrnoException).code ?? 'ENOSPC';
  const reason = formatProblem({
    where: dir,
    message: `the disk filled up while staging ${what} (${code}); staging removed, the running bundle untouched; needs ${needed} bytes (${mb(needed)}), ${free} bytes (${mb(free)}) free now`,
    fix: FIX,
  });
  return new DiskFullError(reason, dir, needed, free, { cause });
}
