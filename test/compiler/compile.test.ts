// The compile command end to end: zoo and fixture models, calibration check, every bad input
// with its error class and message, and atomic writing (nothing left behind, old bundle intact).
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError, OnnxFormatError } from '../../src/util/errors.js';
import { readModel, writeModel } from '../../src/onnx/index.js';
import { CheckFailedError, compileModel, type CompileOptions } from '../../src/compiler/index.js';
import { verifyBundle } from '../../src/bundle/index.js';
import { runCli } from '../cli/helpers.js';
import { FIXTURES, RESNET, RESNET_LABELS, RESNET_PRE, SINGLE, SINGLE_LABELS, SINGLE_PRE, entries, fingerprint, scratch, zooCopy } from './helpers.js';

let dir: string;
const RESNET_FLAGS = { preprocess: RESNET_PRE, labels: RESNET_LABELS };

beforeAll(async () => {
  dir = await scratch('compile');
});

/** Expect `compile` to fail with `cls` and a message matching `message`, leaving `parent` as it was. */
async function expectFailure(opts: CompileOptions, cls: new (...a: never[]) => Error, message: RegExp): Promise<Error> {
  const parent = path.dirname(path.resolve(opts.out));
  await fsp.mkdir(parent, { recursive: true });
  const before = await fingerprint(parent);
  const beforeEntries = await entries(parent);
  let err: unknown;
  try {
    await compileModel(opts);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(cls);
  expect((err as Error).message).toMatch(message);
  // No bundle, no temporary or set-aside folder, and nothing changed.
  expect(await entries(parent)).toEqual(beforeEntries);
  expect(await fingerprint(parent)).toEqual(before);
  return err as Error;
}

describe('edgeexit compile', () => {
  it('compiles the zoo model for rpi4 and prints one row per stage', async () => {
    const model = await zooCopy(await scratch('compile-zoo'));
    const out = path.join(dir, 'zoo-bundle');
    // rpi4 defaults to int8 (test/compiler/quantize covers it); this test is about the fp32 split.
    const r = await runCli('compile', model, '--device', 'rpi4', '--out', out, '--precision', 'fp32');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/compiled .*fmnist-branchy\.onnx \(fmnist-branchy .*\) for rpi4 .*fp32/);
    // Stage 0's trunk (the stem, not its conv exit-0 head) has 1.9 % of the MACs, under
    // --recompute auto's 5 %, so by default it hands nothing on and stage 1 recomputes the trunk.
    expect(r.out).toMatch(/^\s*0\s+stage-0\.onnx\s+image → exit_0\s/m);
    expect(r.out).toMatch(/^\s*1\s+stage-1\.onnx\s+image → exit_1, stage1\/carry0\s/m);
    expect(r.out).toMatch(/^\s*2\s+stage-2\.onnx\s+stage1\/carry0 → exit_2\s/m);
    expect(r.out).toMatch(/MACs\s+stages 5\.98M = source 5\.86M \+ 112\.9k recomputed \(stage 0\)/);
    expect(r.out).toMatch(/check\s+passed/);
    expect(r.out).toMatch(/unsigned/);
    const v = await verifyBundle(out);
    expect(v.manifest.stages).toHaveLength(3);
    expect(v.manifest.labels).toHaveLength(10);
  });

  it('--recompute none hands stage 0 over instead; bad --recompute values are refused', async () => {
    const model = await zooCopy(await scratch('compile-zoo-none'));
    const out = path.join(dir, 'zoo-none');
    const r = await runCli('compile', model, '--device', 'x86-host', '--out', out, '--recompute', 'none', '--no-latency');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\s*0\s+stage-0\.onnx\s+image → exit_0, stage0\/carry0\s/m);
    expect(r.out).toMatch(/^\s*1\s+stage-1\.onnx\s+stage0\/carry0 → exit_1, stage1\/carry0\s/m);
    expect(r.out).toMatch(/MACs\s+stages 5\.86M = source 5\.86M\n/);
    const bad = await runCli('compile', model, '--device', 'x86-host', '--out', path.join(dir, 'zoo-bad'), '--recompute', 'first');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--recompute: expected 'auto', 'none' or stage indices like 0 or 0,1, got "first"/);
    const last = await runCli('compile', model, '--device', 'x86-host', '--out', path.join(dir, 'zoo-bad'), '--recompute', '2');
    expect(last.code).toBe(2);
    expect(last.err).toMatch(/stage 2 cannot be recomputed; expected stage indices 0\.\.1/);
  });

  it('compiles a single-output model into a one-stage bundle (flags instead of metadata)', async () => {
    const out = path.join(dir, 'single');
    const pre = await fsp.readFile(SINGLE_PRE, 'utf8');
    const r = await runCli('compile', SINGLE, '--device', 'x86-host', '--out', out, '--preprocess', pre.trim(), '--labels', SINGLE_LABELS, '--json');
    expect(r.code).toBe(0);
    const res = JSON.parse(r.out) as { manifest: { stages: { exit: string; inputs: string[]; carry: string[] }[]; labels: string[] }; report: { inputFrom: { preprocess: string } } };
    expect(res.manifest.stages).toEqual([expect.objectContaining({ exit: 'scores', inputs: ['pixels'], carry: [] })]);
    expect(res.manifest.labels).toEqual(['zero', 'one', 'two', 'three']);
    expect(res.report.inputFrom.preprocess).toBe('--preprocess');
    expect((await fsp.readdir(out)).sort()).toEqual(['golden.bin', 'manifest.json', 'report.json', 'stage-0.onnx']);
  });

  it('keeps a fixed batch size and checks at that size only', async () => {
    const model = await readModel(SINGLE);
    for (const v of [...model.graph.input, ...model.graph.output]) {
      const dim = v.type?.value.case === 'tensorType' ? v.type.value.value.shape?.dim[0] : undefined;
      if (dim) dim.value = { case: 'dimValue', value: 1n };
    }
    const file = path.join(dir, 'inputs', 'single-batch1.onnx');
    await writeModel(model, file);
    const r = await compileModel({ model: file, device: 'rpi4', out: path.join(dir, 'batch1'), preprocess: SINGLE_PRE, labels: SINGLE_LABELS });
    expect(r.manifest.input.shape).toEqual([1, 1, 12, 12]);
    expect(r.report.check.random).toMatchObject({ source: 'random images (batch 1)', samples: 1 });
  });

  it('checks the stages on calibration images too and reports them', async () => {
    const out = path.join(dir, 'with-calibration');
    const r = await compileModel({ model: RESNET, device: 'rpi4', out, ...RESNET_FLAGS, calibration: path.join(FIXTURES, 'images') });
    const cal = r.report.check.calibration!;
    expect(cal.samples).toBe(10);
    for (const e of cal.exits) {
      expect(e.maxAbsDiff).toBeLessThanOrEqual(1e-5);
      expect(e.top1Agreement).toBe(1);
    }
    const saved = JSON.parse(await fsp.readFile(path.join(out, 'report.json'), 'utf8')) as { check: { calibration: { samples: number } } };
    expect(saved.check.calibration.samples).toBe(10);
  });

  describe('bad inputs fail with the right error, naming the thing, and leave nothing behind', () => {
    it('not an ONNX file', async () => {
      const bogus = path.join(dir, 'inputs', 'notes.onnx');
      await fsp.mkdir(path.dirname(bogus), { recursive: true });
      await fsp.writeFile(bogus, 'these are my notes, not a model\n');
      await expectFailure({ model: bogus, device: 'rpi4', out: path.join(dir, 'bad1', 'b'), ...RESNET_FLAGS }, OnnxFormatError, /notes\.onnx: not an ONNX model.*text file/);
    });

    it('a model with no outputs', async () => {
      const model = await readModel(RESNET);
      model.graph.output = [];
      const file = path.join(dir, 'inputs', 'no-outputs.onnx');
      await writeModel(model, file);
      const err = await expectFailure({ model: file, device: 'rpi4', out: path.join(dir, 'bad2', 'b'), ...RESNET_FLAGS }, InputError, /no-outputs\.onnx: the model has no outputs/);
      expect(err).not.toBeInstanceOf(OnnxFormatError);
    });

    it('an unknown device', async () => {
      await expectFailure({ model: RESNET, device: 'rpi9', out: path.join(dir, 'bad3', 'b'), ...RESNET_FLAGS }, InputError, /unknown device profile "rpi9"; known profiles: .*rpi4/);
    });

    it('an unknown --exits name', async () => {
      await expectFailure(
        { model: RESNET, device: 'rpi4', out: path.join(dir, 'bad4', 'b'), exits: ['head/aux:0', 'exit_7'], ...RESNET_FLAGS },
        InputError,
        /--exits: no output named 'exit_7' .*outputs are 'head\/aux:0', 'mid\.logits', 'logits\.final'/,
      );
    });

    it('a model without edgeexit metadata and no flags: says which flags to add', async () => {
      const err = await expectFailure({ model: RESNET, device: 'rpi4', out: path.join(dir, 'bad5', 'b') }, InputError, /resnet-exits\.onnx: the model does not describe its input/);
      expect(err.message).toMatch(/add --preprocess/);
      expect(err.message).toMatch(/add --labels/);
      const onlyLabels = await expectFailure({ model: RESNET, device: 'rpi4', out: path.join(dir, 'bad5', 'b'), preprocess: RESNET_PRE }, InputError, /add --labels/);
      expect(onlyLabels.message).not.toMatch(/--preprocess/);
    });

    it('labels that do not match the exit width, and a preprocess that does not match the input', async () => {
      await expectFailure({ model: RESNET, device: 'rpi4', out: path.join(dir, 'bad6', 'b'), preprocess: RESNET_PRE, labels: SINGLE_LABELS }, InputError, /exit 'head\/aux:0': expected logits of shape \[batch, 4\]/);
      await expectFailure({ model: RESNET, device: 'rpi4', out: path.join(dir, 'bad6', 'b'), preprocess: SINGLE_PRE, labels: RESNET_LABELS }, InputError, /input 'image' has dims \[batch,3,16,16\], but the preprocessing makes \[batch,1,12,12\]/);
    });

    it('int8 without calibration images for a model that is not Fashion-MNIST', async () => {
      await expectFailure({ model: RESNET, device: 'rpi4', out: path.join(dir, 'bad7', 'b'), precision: 'int8', ...RESNET_FLAGS }, InputError, /--precision int8 needs calibration images/);
    });

    it('an --out folder that is not a bundle is refused, untouched', async () => {
      const mine = path.join(dir, 'bad8', 'my-stuff');
      await fsp.mkdir(mine, { recursive: true });
      await fsp.writeFile(path.join(mine, 'thesis.txt'), 'precious');
      await expectFailure({ model: RESNET, device: 'rpi4', out: mine, ...RESNET_FLAGS }, InputError, /my-stuff: is a folder that is not an edgeexit bundle/);
      expect(await fsp.readFile(path.join(mine, 'thesis.txt'), 'utf8')).toBe('precious');
    });
  });

  it('an existing bundle at --out survives failed compiles untouched, and is replaced by a successful one', async () => {
    const out = path.join(dir, 'keep', 'bundle');
    const first = await compileModel({ model: RESNET, device: 'rpi4', out, ...RESNET_FLAGS, now: new Date('2026-01-01T00:00:00Z') });
    expect(first.replaced).toBe(false);
    const before = await fingerprint(out);
    // Fails before anything is written.
    await expectFailure({ model: RESNET, device: 'rpi4', out, exits: ['nope'], ...RESNET_FLAGS }, InputError, /'nope'/);
    // Fails at the numeric check (nothing can meet a negative tolerance).
    await expectFailure({ model: RESNET, device: 'rpi4', out, tolerance: -1, ...RESNET_FLAGS }, CheckFailedError, /do not reproduce the model.*no bundle was written/s);
    // Fails after the new bundle is complete in its temporary folder, just before the swap.
    let tmpSeen = '';
    await expectFailure(
      {
        model: RESNET,
        device: 'rpi4',
        out,
        ...RESNET_FLAGS,
        write: {
          beforeCommit: async (tmp) => {
            tmpSeen = tmp;
            expect((await fsp.readdir(tmp)).sort()).toEqual(['golden.bin', 'manifest.json', 'report.json', 'stage-0.onnx', 'stage-1.onnx', 'stage-2.onnx']);
            throw new Error('disk full (simulated)');
          },
        },
      },
      Error,
      /disk full/,
    );
    expect(path.dirname(tmpSeen)).toBe(path.dirname(out));
    expect(await fingerprint(out)).toEqual(before);
    // A successful compile replaces it, leaving no set-aside copy.
    const second = await compileModel({ model: RESNET, device: 'rpi4', out, ...RESNET_FLAGS, now: new Date('2026-02-01T00:00:00Z') });
    expect(second.replaced).toBe(true);
    expect(await entries(path.dirname(out))).toEqual(['bundle']);
    expect(second.manifest.provenance.created).toBe('2026-02-01T00:00:00.000Z');
    expect((await verifyBundle(out)).manifest.provenance.created).toBe('2026-02-01T00:00:00.000Z');
  });
});
