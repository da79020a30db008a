// Shared pieces of the runtime tests: scratch folders, the original model's per-exit logits as
// the reference, and an independent (deliberately naive) re-computation of the exit rule.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { createSession, asFloat32, type PlainTensor } from '../../src/backends/onnxruntime.js';
import { addTrustedKey, generateKeyPair, type KeyPairFiles } from '../../src/bundle/index.js';
import { mulberry32 } from '../../src/util/random.js';
import { FIXTURES, REPO, ZOO, scratch } from '../compiler/helpers.js';

export { FIXTURES, REPO, ZOO, scratch };
export const FMNIST = path.join(REPO, 'calibration', 'fashion-mnist');

/**
 * A signing key pair under `dir` and a trust store that trusts it, as a device would: compile
 * with `privateKey`, then run with `--trust-dir trustDir` (the default store is never touched).
 */
export async function trustedSigner(dir: string): Promise<KeyPairFiles & { trustDir: string }> {
  const keys = await generateKeyPair(path.join(dir, 'signer'));
  const trustDir = path.join(dir, 'trust');
  await addTrustedKey(trustDir, keys.publicKey);
  return { ...keys, trustDir };
}

/** The first `per` images (sorted) of every Fashion-MNIST class folder. */
export async function fmnistImages(per: number): Promise<string[]> {
  const out: string[] = [];
  for (const cls of (await fsp.readdir(FMNIST, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort()) {
    const files = (await fsp.readdir(path.join(FMNIST, cls))).filter((f) => f.endsWith('.png')).sort();
    out.push(...files.slice(0, per).map((f) => path.join(FMNIST, cls, f)));
  }
  return out;
}

/** Logits rows of every output of the original (unsplit) model, by output name. */
export async function referenceLogits(model: string, inputName: string, input: PlainTensor): Promise<Record<string, number[][]>> {
  const s = await createSession(model, { intraOpNumThreads: 1 });
  try {
    const out = await s.run({ [inputName]: input });
    const res: Record<string, number[][]> = {};
    for (const [name, t] of Object.entries(out)) {
      const f = asFloat32(t, name);
      const [n, c] = f.dims as [number, number];
      res[name] = Array.from({ length: n }, (_, r) => Array.from(f.data.subarray(r * c, (r + 1) * c)));
    }
    return res;
  } finally {
    await s.close();
  }
}

export function softmaxRow(l: number[], t = 1): number[] {
  const m = Math.max(...l.map((x) => x / t));
  const e = l.map((x) => Math.exp(x / t - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

export const argmax = (l: number[]): number => l.indexOf(Math.max(...l));
export const maxProb = (l: number[], t = 1): number => Math.max(...softmaxRow(l, t));
export function normEntropy(l: number[], t = 1): number {
  const p = softmaxRow(l, t);
  return -p.reduce((a, x) => a + (x > 0 ? x * Math.log(x) : 0), 0) / Math.log(p.length);
}
export function marginOf(l: number[], t = 1): number {
  const p = softmaxRow(l, t).sort((a, b) => b - a);
  return p[0]! - p[1]!;
}

/**
 * The exit a sample takes by the rule itself: the first exit whose score clears its threshold,
 * else the last. `exits[k][i]` are sample i's logits at exit k.
 */
export function referenceExit(exits: number[][][], i: number, thresholds: number[], score: (l: number[]) => number, atMost = false): number {
  for (let k = 0; k < exits.length - 1; k++) {
    const s = score(exits[k]![i]!);
    if (atMost ? s <= thresholds[k]! : s >= thresholds[k]!) return k;
  }
  return exits.length - 1;
}

/** A threshold halfway between two neighbouring scores near the `q` quantile, so no score sits on it. */
export function splitThreshold(scores: number[], q: number): number {
  const s = [...scores].sort((a, b) => a - b);
  const i = Math.min(s.length - 2, Math.max(0, Math.floor(q * s.length)));
  for (let j = i; j < s.length - 1; j++) if (s[j + 1]! - s[j]! > 1e-6) return (s[j]! + s[j + 1]!) / 2;
  return s[i]!;
}

/** Deterministic pseudo-random floats (mulberry32), for tensor inputs. */
export function randomTensor(dims: number[], seed = 1): { data: Float32Array; dims: number[] } {
  const rand = mulberry32(seed);
  const n = dims.reduce((x, y) => x * y, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rand() * 4 - 2;
  return { data, dims };
}
