// Model families: the registry picks a family by the model path, and a family is all the compile
// pipeline needs to know about a model: a family written outside the compiler (here, one that
// keeps only the last exit of the ResNet-style fixture and says so in its notes) compiles through
// the same checks, report and bundle writer as the built-in ones.
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { CheckFailedError, FAMILIES, compileWith, familyOf, multiExitFamily, type ModelFamily } from '../../src/compiler/index.js';
import { verifyBundle } from '../../src/bundle/index.js';
import { REPO, RESNET, RESNET_LABELS, RESNET_PRE, entries, scratch } from './helpers.js';

describe('model families', () => {
  it('a folder is planned by the CBNet family, a file by the multi-exit family', async () => {
    expect(FAMILIES.map((f) => f.name)).toEqual(['cbnet', 'multi-exit']);
    expect((await familyOf(path.join(REPO, 'models', 'fmnist-cbnet'))).name).toBe('cbnet');
    expect((await familyOf(RESNET)).name).toBe('multi-exit');
    // A missing path is no folder: the multi-exit family reads it and names it in its error.
    expect((await familyOf(path.join(REPO, 'no', 'such.onnx'))).name).toBe('multi-exit');
  });

  it('a family from outside the compiler goes through the shared check, report and writer', async () => {
    const lastExitOnly: ModelFamily = {
      name: 'last-exit',
      matches: async (m) => m.endsWith('.onnx'),
      async plan(env) {
        const plan = await multiExitFamily.plan({ ...env, opts: { ...env.opts, exits: ['logits.final'] } });
        return { ...plan, closingNotes: ['last-exit family: one stage only'] };
      },
    };
    const dir = await scratch('family');
    const flags = { preprocess: RESNET_PRE, labels: RESNET_LABELS, latency: false };
    const r = await compileWith(lastExitOnly, { model: RESNET, device: 'x86-host', out: path.join(dir, 'b'), ...flags });
    expect(r.manifest.stages.map((s) => s.exit)).toEqual(['logits.final']);
    expect(r.report.check.passed).toBe(true);
    expect(r.report.notes.at(-1)).toBe('last-exit family: one stage only');
    expect((await verifyBundle(r.out)).manifest.stages).toHaveLength(1);
    // The shared check holds a family to its source: a zero tolerance that no float split can meet
    // fails the compile the same way, and nothing is written.
    await expect(compileWith(lastExitOnly, { model: RESNET, device: 'x86-host', out: path.join(dir, 'c'), ...flags, tolerance: -1 })).rejects.toThrow(CheckFailedError);
    expect(await entries(dir)).toEqual(['b']);
  });
});
