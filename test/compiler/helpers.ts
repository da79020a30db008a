// Shared pieces of the compiler tests: fixture paths, a private copy of the zoo model (it may be
// rewritten by a training run while tests run), scratch folders, and folder fingerprints for
// "left untouched" checks.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = path.join(REPO, 'test', 'fixtures', 'compiler');
export const RESNET = path.join(FIXTURES, 'resnet-exits.onnx');
export const RESNET_PRE = path.join(FIXTURES, 'resnet-exits.preprocess.json');
export const RESNET_LABELS = path.join(FIXTURES, 'resnet-exits.labels.txt');
export const SINGLE = path.join(FIXTURES, 'single-exit.onnx');
export const SINGLE_PRE = path.join(FIXTURES, 'single-exit.preprocess.json');
export const SINGLE_LABELS = path.join(FIXTURES, 'single-exit.labels.txt');
export const ZOO = path.join(REPO, 'models', 'fmnist-branchy', 'fmnist-branchy.onnx');
/** The zoo model is retrained from time to time; its tests need only that it exists. */

const scratchDirs: string[] = [];
// Registered once, when a test file imports this module, so folders made inside hooks are removed too.
afterAll(async () => {
  await Promise.all(scratchDirs.splice(0).map((d) => fsp.rm(d, { recursive: true, force: true })));
});

/** A scratch folder removed after the test file. */
export async function scratch(label: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `edgeexit-${label}-`));
  scratchDirs.push(dir);
  return dir;
}

/** Copy the zoo model into `dir`, so a training run rewriting it cannot change it mid-test. */
export async function zooCopy(dir: string): Promise<string> {
  const file = path.join(dir, 'fmnist-branchy.onnx');
  await fsp.copyFile(ZOO, file);
  return file;
}

/** name → sha256 of every file under `dir` (recursive), for "nothing changed" checks. */
export async function fingerprint(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(p, r);
      else out[r] = createHash('sha256').update(await fsp.readFile(p)).digest('hex');
    }
  };
  await walk(dir, '');
  return out;
}

/** Copy a folder (bundles are flat, but copy recursively anyway). */
export async function copyDir(from: string, to: string): Promise<string> {
  await fsp.cp(from, to, { recursive: true });
  return to;
}

/** Entries of a folder, for "no bundle or temp folder left behind" checks. */
export async function entries(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).sort();
}
