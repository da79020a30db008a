// Small sysfs helpers shared by the file-based meters: resolve a sysfs path under a test root,
// read one number with an error that names the file and the bad value, and expand the `*` globs
// device profiles use (hwmon<k> and iio:device<k> numbers change across boots).
import { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';
import { EnergySensorError } from './meter.js';
import { show } from '../../util/errors.js';

export function underRoot(root: string, sysPath: string): string {
  return root === '/' ? sysPath : path.join(root, sysPath);
}

export async function readText(file: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new EnergySensorError(
      { where: file, message: code === 'EACCES' ? 'permission denied' : code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? String(err)})`, fix: code === 'EACCES' ? 'run as root or relax the file\'s permissions' : 'check the sensor path in the device profile' },
      { cause: err },
    );
  }
}

/** sysfs numbers are decimal integers, one per file; anything else means the wrong file or a driver fault. */
export async function readNumber(file: string): Promise<number> {
  const raw = await readText(file);
  const text = raw.trim();
  const value = Number(text);
  if (text === '' || !/^-?\d+(\.\d+)?$/.test(text) || !Number.isFinite(value))
    throw new EnergySensorError({ where: file, message: 'not a number', expected: 'a decimal integer', got: show(raw) });
  return value;
}

export async function isReadable(file: string): Promise<boolean> {
  try {
    await fsp.access(file, fsc.R_OK);
    // access() says yes for root-owned 0400 files when running as root; reading is the real test.
    await fsp.readFile(file);
    return true;
  } catch {
    return false;
  }
}

/** Expand `*` within path segments (no `**`); results sorted so the choice is stable. */
export async function globDirs(pattern: string): Promise<string[]> {
  const parts = pattern.split('/');
  let current = [parts[0] === '' ? '/' : parts[0]!];
  for (const part of parts.slice(1)) {
    if (part === '') continue;
    const next: string[] = [];
    for (const base of current) {
      if (!part.includes('*')) {
        const p = path.join(base, part);
        if (await exists(p)) next.push(p);
        continue;
      }
      const re = new RegExp('^' + part.split('*').map(escapeRe).join('.*') + '$');
      let names: string[];
      try {
        names = await fsp.readdir(base);
      } catch {
        continue;
      }
      for (const n of names.sort()) if (re.test(n)) next.push(path.join(base, n));
    }
    current = next;
  }
  return current;
}

function escapeRe(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.stat(p);
    return true;
  } catch {
    return false;
  }
}
