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
 * Make `file` a hard link of `from` when `from` holds exactly `data` (it is read back and compared
 * byte for byte); false when it cannot (another filesystem, no hard links there, other bytes, gone),
 * leaving nothing behind. Linking writes no data, so a bundle update that keeps its model files
 * costs a device no flash writes. Only for files nobody writes in place: a link shares every
 * later change. `file` must not exist yet (a fresh folder's entry).
 *
 * @example
 * if (!(await linkIfSame(path.join(tmp, 'stage0.onnx'), bytes, path.join(old, 'stage0.onnx')))) await fsp.writeFile(path.join(tmp, 'stage0.onnx'), bytes);
 */
export async function linkIfSame(file: string, data: Uint8Array, from: string): Promise<boolean> {
  try {
    await fsp.link(from, file);
  } catch {
    return false;
  }
  const same = await fsp
    .readFile(file)
    .then((got) => Buffer.compare(got, data) === 0)
    .catch(() => false);
  if (!same) await fsp.rm(file, { force: true });
  return same;
}

/**
 * Put `data` at `file` atomically as a hard link of `from` (see linkIfSame), else by writing it
 * (writeFileAtomic). Says which it did.
 *
 * @example
 * await linkOrWriteAtomic('staging/stage0.onnx', bytes, 'store/abc/stage0.onnx'); // 'linked'
 */
export async function linkOrWriteAtomic(file: string, data: Uint8Array, from: string): Promise<'linked' | 'written'> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.link`);
  if (await linkIfSame(tmp, data, from)) {
    try {
      await fsp.rename(tmp, file);
      return 'linked';
    } catch {
      await fsp.rm(tmp, { force: true });
    }
  }
  await writeFileAtomic(file, data);
  return 'written';
}
