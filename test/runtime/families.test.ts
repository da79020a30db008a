// The registry of runtime model families: every manifest kind has a runner, and a kind without
// one is refused with an error that names it and the kinds this runtime runs.
import { describe, expect, it } from 'vitest';
import { ManifestSchema } from '../../src/bundle/manifest.js';
import { RUNNER_KINDS, runnerFamily } from '../../src/runtime/families/registry.js';
import { UnsupportedError } from '../../src/util/errors.js';

describe('runner families', () => {
  it('has a runner for every manifest kind, filed under its own kind', () => {
    const kinds = ManifestSchema.shape.kind.options;
    expect([...RUNNER_KINDS].sort()).toEqual([...kinds].sort());
    for (const kind of kinds) expect(runnerFamily(kind).kind).toBe(kind);
  });

  it('refuses an unknown kind, naming it, the bundle and the supported kinds', () => {
    let err: unknown;
    try {
      runnerFamily('two-tower', 'bundles/x.tar');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnsupportedError);
    const msg = (err as Error).message;
    expect(msg).toContain('bundles/x.tar: manifest.json kind');
    expect(msg).toContain('"two-tower"');
    expect(msg).toContain('multi-exit, cbnet');
    expect(msg).toContain('fix:');
  });

  it('does not take inherited object keys for kinds', () => {
    expect(() => runnerFamily('toString')).toThrow(/manifest\.json kind: expected a kind this runtime runs/);
  });
});
