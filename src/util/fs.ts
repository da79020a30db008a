// Filesystem helpers that never leave a half-written file: write next to the target, then rename.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * fsync a folder, which makes the renames and creations inside it durable. Not every filesystem
 * lets a folder be opened or fsync'd (some network filesystems); there it does nothing.
 */
export async function syncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, 'r').catch(() => undefined);
  if (!h) return;
  try {
    await h.sync();
  } catch {
    // fsync on a folder is not supported everywhere.
  } finally {
    await h.close();
  }
}

/**
 * Write `data` to `file` atomically (temporary file in the same folder, fsync, rename). `mode`:
 * the file's permissions, set before any byte is written so a secret is never readable by others.
 * `owner`: keep a replaced file's owner (a file a service reads as its own user); only root may
 * give a file away, so for anyone else it is left as it is.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: { mode?: number; owner?: { uid: number; gid: number } } = {}): Promise<void> {
  const dir = path.dirname(file);
  await fsp.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const handle = await fsp.open(tmp, 'w');
  try {
    try {
      if (opts.mode !== undefined) await handle.chmod(opts.mode);
      if (opts.owner) await handle.chown(opts.owner.uid, opts.owner.gid).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EPERM') throw err;
      });
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    // A write that failed (a full disk) must not leave its temp file taking the space.
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Make `file` a hard link of `from` and keep it when `accept` takes its bytes (read back through
 * the link, so what is checked is what stays); false when it cannot (another filesystem, no hard
 * links there, bytes refused, gone), leaving nothing behind. Linking writes no data, so a bundle
 * update that keeps its model files costs a device no flash writes. Only for files nobody writes
 * in place: a link shares every later change. `file` must not exist yet.
 *
 * @example
 * await linkIf(path.join(tmp, 'stage0.onnx'), path.join(old, 'stage0.onnx'), (b) => sha256Hex(b) === want);
 */
export async function linkIf(file: string, from: string, accept: (bytes: Buffer) => boolean): Promise<boolean> {
  try {
    await fsp.link(from, file);
  } catch {
    return false;
  }
  const ok = await fsp
    .readFile(file)
    .then(accept)
    .catch(() => false);
  if (!ok) await fsp.rm(file, { force: true });
  return ok;
}

/**
 * linkIf for exactly `data` (compared byte for byte).
 *
 * @example
 * if (!(await linkIfSame(path.join(tmp, 'stage0.onnx'), bytes, path.join(old, 'stage0.onnx')))) await fsp.writeFile(path.join(tmp, 'stage0.onnx'), bytes);
 */
export function linkIfSame(file: string, data: Uint8Array, from: string): Promise<boolean> {
  return linkIf(file, from, (got) => Buffer.compare(got, data) === 0);
}

/**
 * linkIf onto `file` atomically (a temporary name in its folder, then rename over whatever is
 * there); false, with `file` untouched, when no link was kept.
 *
 * @example
 * if (!(await linkAtomicIf('staging/stage0.onnx', 'store/abc/stage0.onnx', matches))) await writeFileAtomic('staging/stage0.onnx', bytes);
 */
export async function linkAtomicIf(file: string, from: string, accept: (bytes: Buffer) => boolean): Promise<boolean> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.link`);
  if (!(await linkIf(tmp, from, accept))) return false;
  try {
    await fsp.rename(tmp, file);
    return true;
  } catch {
    await fsp.rm(tmp, { force: true });
    return false;
  }
}
