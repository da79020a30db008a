// The reference zoo shipped in `models/`: one folder per model with its ONNX file(s), the
// results.json its training run wrote and a model card. Listing reads the files themselves so
// the CLI never shows a number that the folder does not back.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../devices/load.js';

export interface ZooEntry {
  name: string;
  dir: string;
  kind: 'multi-exit' | 'cbnet';
  /** ONNX files in the folder, main one first. */
  files: string[];
  card?: string;
  /** results.json as written by models/train.py, when present. */
  results?: Record<string, unknown>;
}

export function modelsDir(): string {
  return path.join(packageRoot(), 'models');
}

/** Every model folder under models/ that holds at least one .onnx file. */
export async function listZoo(dir = modelsDir()): Promise<ZooEntry[]> {
  const entries = await fsp.readdir(dir, { withFileTypes: true });
  const out: ZooEntry[] = [];
  for (const e of entries.filter((x) => x.isDirectory()).sort((a, b) => a.name.localeCompare(b.name))) {
    const folder = path.join(dir, e.name);
    const files = (await fsp.readdir(folder)).filter((f) => f.endsWith('.onnx')).sort();
    if (files.length === 0) continue;
    const isCbnet = files.includes('converter.onnx') && files.includes('classifier.onnx');
    // The main file: the pipeline for CBNet, else the one named after the folder.
    const main = isCbnet ? 'pipeline.onnx' : files.includes(`${e.name}.onnx`) ? `${e.name}.onnx` : files[0]!;
    const ordered = [main, ...files.filter((f) => f !== main)].filter((f) => files.includes(f));
    let results: Record<string, unknown> | undefined;
    try {
      results = JSON.parse(await fsp.readFile(path.join(folder, 'results.json'), 'utf8')) as Record<string, unknown>;
    } catch {
      results = undefined;
    }
    const card = path.join(folder, 'README.md');
    const hasCard = await fsp.stat(card).then(() => true, () => false);
    out.push({
      name: e.name,
      dir: folder,
      kind: isCbnet ? 'cbnet' : 'multi-exit',
      files: ordered.map((f) => path.join(folder, f)),
      ...(hasCard ? { card } : {}),
      ...(results ? { results } : {}),
    });
  }
  return out;
}

/**
 * Test accuracies that training recorded in results.json, in exit order. A multi-exit model lists
 * one per exit; a CBNet folder records the classifier alone and the pair, so with `file` it gives
 * the one that file produces, and without it both ([classifier, pair]).
 */
export function recordedTestAccuracy(results: Record<string, unknown> | undefined, file?: string): number[] {
  const acc = results?.testAccuracy;
  if (Array.isArray(acc)) return acc.filter((x): x is number => typeof x === 'number');
  if (!acc || typeof acc !== 'object') return [];
  const o = acc as Record<string, unknown>;
  const pick = (...v: unknown[]): number[] => v.filter((x): x is number => typeof x === 'number');
  if (file?.endsWith('pipeline.onnx')) return pick(o.pair);
  if (file?.endsWith('classifier.onnx')) return pick(o.light);
  return file === undefined ? pick(o.light, o.pair) : [];
}
