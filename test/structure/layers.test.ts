// The layers are the pipeline, and imports run only downward: a module may import its own layer
// and those listed before it, never one after. The device path (runtime, telemetry, agent and what
// they import) must reach no compiler, calibration, fleet, store or broker module.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(__dirname, '../../src');

/** Lowest first. Layers on one line are siblings: neither may import the other. */
export const LAYERS: readonly (readonly string[])[] = [
  ['util'],
  ['onnx'],
  ['devices', 'data'],
  ['bundle'],
  ['backends'],
  ['model'],
  ['compiler', 'runtime', 'eval'],
  ['calibration'],
  ['telemetry'],
  ['agent'],
  ['fleet'],
  ['cli'],
  ['index.ts'],
];

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : /\.ts$/.test(f) ? [p] : [];
  });
}

/** Relative import specifiers of a file: static imports, re-exports and dynamic import(). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g))
    out.push((m[1] ?? m[2])!);
  return out;
}

function layerOf(file: string): string {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length === 1 ? rel[0]! : rel[0]!;
}

function rankOf(layer: string): number {
  const r = LAYERS.findIndex((l) => l.includes(layer));
  if (r < 0) throw new Error(`src/${layer} is in no layer: add it to LAYERS in test/structure/layers.test.ts (and the README's layout table)`);
  return r;
}

function resolve(from: string, spec: string): string {
  return path.resolve(path.dirname(from), spec).replace(/\.js$/, '.ts');
}

const files = walk(SRC).filter((f) => !f.includes(`${path.sep}gen${path.sep}`) || true);
const graph = new Map(files.map((f) => [f, importsOf(f).map((s) => resolve(f, s))]));

describe('layers', () => {
  it('every import runs down the layers (or within one layer)', () => {
    const bad: string[] = [];
    for (const [file, deps] of graph) {
      const from = layerOf(file);
      for (const dep of deps) {
        const to = layerOf(dep);
        if (to === from) continue;
        if (rankOf(to) >= rankOf(from)) bad.push(`${path.relative(SRC, file)} imports ${path.relative(SRC, dep)} (${from} → ${to})`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('every import names a file that exists', () => {
    const missing = [...graph].flatMap(([f, deps]) => deps.filter((d) => !graph.has(d)).map((d) => `${path.relative(SRC, f)} → ${path.relative(SRC, d)}`));
    expect(missing).toEqual([]);
  });

  it('the device path reaches no compiler, calibration, fleet, SQLite or aedes module', () => {
    const device = files.filter((f) => ['runtime', 'telemetry', 'agent'].includes(layerOf(f)));
    const seen = new Set<string>();
    const stack = [...device];
    while (stack.length) {
      const f = stack.pop()!;
      if (seen.has(f)) continue;
      seen.add(f);
      stack.push(...(graph.get(f) ?? []));
    }
    const forbidden = [...seen].filter((f) => ['compiler', 'calibration', 'fleet', 'cli', 'eval'].includes(layerOf(f))).map((f) => path.relative(SRC, f));
    expect(forbidden).toEqual([]);
    const natives = [...seen].filter((f) => /from\s+['"](better-sqlite3|aedes|pg)['"]/.test(readFileSync(f, 'utf8'))).map((f) => path.relative(SRC, f));
    expect(natives).toEqual([]);
  });

  it('has no import cycles between files', () => {
    const state = new Map<string, 1 | 2>();
    const cycles: string[] = [];
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 2) return;
      if (state.get(f) === 1) {
        cycles.push([...trail.slice(trail.indexOf(f)), f].map((x) => path.relative(SRC, x)).join(' → '));
        return;
      }
      state.set(f, 1);
      for (const d of graph.get(f) ?? []) visit(d, [...trail, f]);
      state.set(f, 2);
    };
    for (const f of files) visit(f, []);
    expect(cycles).toEqual([]);
  });
});
