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
