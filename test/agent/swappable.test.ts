// SwappableRunner over two real bundle runners: a classify call in flight when the swap comes
// finishes on the old runner, calls after the swap go to the new one, and the old runner is
// closed only after its last call returned.
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { SwappableRunner } from '../../src/agent/index.js';
import { loadBundle, type BundleRunner } from '../../src/runtime/bundle-runner.js';
import { fmnistImages, scratch } from '../runtime/helpers.js';
import { compileFixture, newer, type Fixture } from './helpers.js';

let fx: Fixture;
let v1: string;
let v2: string;

beforeAll(async () => {
  fx = await compileFixture(await scratch('swap'));
  v1 = await newer(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, '1.0.0');
  v2 = await newer(fx.bundle, path.join(fx.dir, 'v2'), fx.privateKey, '1.1.0');
}, 120_000);

/** A real runner whose calls and close are logged as `<tag>:start|end|close`. */
function logged(r: BundleRunner, tag: string, log: string[]): BundleRunner {
  return {
    ...r,
    manifest: r.manifest,
    classify: async (inputs, o) => {
      log.push(`${tag}:start`);
      try {
        return await r.classify(inputs, o);
      } finally {
        log.push(`${tag}:end`);
      }
    },
    close: async () => {
      log.push(`${tag}:close`);
      await r.close();
    },
  };
}

describe('SwappableRunner', () => {
  it('finishes in-flight calls on the old runner, sends new ones to the new, closes the old after', async () => {
    const log: string[] = [];
    const quiet = { trustDir: fx.trustDir, onWarning: () => {} };
    const a = logged(await loadBundle(v1, quiet), 'a', log);
    const b = logged(await loadBundle(v2, quiet), 'b', log);
    const images = await fmnistImages(3);
    const sw = new SwappableRunner(a);
    expect(sw.manifest.model.version).toBe('1.0.0');

    const inFlight = sw.classify(images, { batchSize: 1 });
    const swapped = sw.swap(b);
    expect(sw.manifest.model.version).toBe('1.1.0');
    const after = sw.classify(images.slice(0, 2));
    const [r1, r2] = await Promise.all([inFlight, after, swapped]);

    expect(r1.items.every((i) => i.ok)).toBe(true);
    expect(r1.items).toHaveLength(images.length);
    expect(r2.items.every((i) => i.ok)).toBe(true);
    expect(log.filter((l) => l.startsWith('a:'))).toEqual(['a:start', 'a:end', 'a:close']);
    expect(log.indexOf('b:start')).toBeGreaterThan(log.indexOf('a:start'));
    expect(log).not.toContain('b:close');
    // The same predictions either way: both bundles hold the same stages.
    const labels = (r: typeof r1) => r.items.map((i) => (i.ok ? i.label : null));
    expect(labels(r2)).toEqual(labels(r1).slice(0, 2));

    await sw.close();
    expect(log.at(-1)).toBe('b:close');
  });
});
