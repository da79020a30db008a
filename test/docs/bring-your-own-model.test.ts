// The guide docs/bring-your-own-model.md, run as a new user would: its export script
// (docs/examples/export_my_model.py) with Debian's torch, then compile (fp32 and int8 for rpi4),
// calibrate on the shipped Fashion-MNIST calibration images, and run — each through the CLI, each
// step's outcome asserted. In CI (CI=true) a machine without python3-torch fails here, naming the
// apt packages, rather than skipping the guide silently.
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { describeModel } from '../../src/model/describe.js';
import { runCli } from '../cli/helpers.js';
import { REPO, scratch } from '../compiler/helpers.js';
import { need } from '../support/require.js';

// Debian's python (the pyenv one has no torch); EDGEEXIT_PYTHON points elsewhere, e.g. to check the CI failure.
const PYTHON = process.env.EDGEEXIT_PYTHON ?? '/usr/bin/python3';
const SCRIPT = path.join(REPO, 'docs', 'examples', 'export_my_model.py');
const CALIBRATION = path.join(REPO, 'calibration', 'fashion-mnist');
const LABELS = ['tshirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot'];

/** Debian's python with torch and onnx importable (checked here only: the import takes seconds). */
const TORCH = need({
  what: `${PYTHON} with torch and onnx`,
  apt: 'python3-torch python3-onnx',
  paths: [PYTHON],
  check: (python) => {
    const r = spawnSync(python, ['-c', 'import torch, onnx'], { encoding: 'utf8' });
    return r.status === 0 ? undefined : `cannot import torch and onnx (${r.stderr.trim().split('\n').at(-1) ?? `exit ${r.status}`})`;
  },
});

describe('bring your own model: the guide end to end', () => {
  // In CI the guide must run: a missing package is a broken CI image, not a reason to skip.
  TORCH.describe('export → compile → calibrate → run', () => {
    let dir: string;
    let model: string;
    beforeAll(async () => {
      dir = await scratch('byom-guide');
      model = path.join(dir, 'my_model.onnx');
      const r = spawnSync(PYTHON, [SCRIPT, '--out', model], { cwd: dir, encoding: 'utf8' });
      expect(r.stderr).not.toMatch(/Traceback/);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('wrote');
    });

    it('the export meets the contract: logits per exit cheapest first, dynamic batch, every metadata key', async () => {
      const d = await describeModel(model);
      expect(d.metadataProblems).toEqual([]);
      expect(d.name).toBe('tiny-multi-exit');
      expect(d.metadata['edgeexit.version']).toBe('0.1.0');
      expect(d.labels).toEqual(LABELS);
      expect(d.preprocess).toMatchObject({ colorspace: 'gray', size: [28, 28], resize: 'stretch' });
      expect(d.inputs).toEqual([{ name: 'image', dims: ['batch', 1, 28, 28], dtype: 'float32' }]);
      expect(d.outputs.map((o) => [o.name, o.dims])).toEqual([
        ['exit0', ['batch', 10]],
        ['exit1', ['batch', 10]],
        ['final', ['batch', 10]],
      ]);
      const macs = d.exits.map((e) => e.cumulativeMacs);
      expect(macs[0]).toBeLessThan(macs[1]!);
      expect(macs[1]).toBeLessThan(macs[2]!);
      // The guide's model has the blocks it says it has: depthwise convolutions, a residual add, GAP heads.
      const ops = new Map(d.histogram);
      expect(ops.get('GlobalAveragePool')).toBe(3);
      expect(ops.get('Add')).toBeGreaterThanOrEqual(1);
      expect(d.opsets).toContainEqual({ domain: 'ai.onnx', version: 13 });
    });

    it('compiles fp32 for rpi4 without a contract warning, named by its metadata', async () => {
      const out = path.join(dir, 'fp32');
      const r = await runCli('compile', model, '--device', 'rpi4', '--precision', 'fp32', '--out', out, '--no-latency', '--json');
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const res = JSON.parse(r.out) as { manifest: { model: unknown; target: unknown; stages: { exit: string }[] }; report: { notes: string[] } };
      expect(res.manifest.model).toEqual({ name: 'tiny-multi-exit', version: '0.1.0' });
      expect(res.manifest.target).toEqual({ device: 'rpi4', precision: 'fp32' });
      expect(res.manifest.stages.map((s) => s.exit)).toEqual(['exit0', 'exit1', 'final']);
      expect(res.report.notes.filter((n) => n.startsWith('warning: '))).toEqual([]);
    });

    it('compiles int8 for rpi4, calibrates on the shipped images and runs', async () => {
      const bundle = path.join(dir, 'int8');
      // As the guide does: sign with a fleet key, and the "device" (a trust store of its own here) trusts it.
      const keys = path.join(dir, 'keys', 'fleet');
      const trust = path.join(dir, 'trust');
      expect((await runCli('keygen', '--out', keys)).code).toBe(0);
      const c = await runCli('compile', model, '--device', 'rpi4', '--precision', 'int8', '--out', bundle, '--no-latency', '--calibration-limit', '300', '--key', `${keys}.key`);
      expect(c.code).toBe(0);
      expect(c.out).toMatch(/^verify {4}every exit within \d+ pp of fp32 on the calibration images/m);
      expect(c.out).not.toMatch(/^warn /m);
      const manifest = async (): Promise<{ target: { precision: string }; exitPolicy: { thresholds: number[] | null } }> =>
        JSON.parse(await fsp.readFile(path.join(bundle, 'manifest.json'), 'utf8'));
      expect((await manifest()).target.precision).toBe('int8');
      expect((await manifest()).exitPolicy.thresholds).toBeNull();

      const report = path.join(dir, 'calibration');
      const cal = await runCli('calibrate', bundle, '--data', CALIBRATION, '--latency-source', 'model', '--max-accuracy-drop', '50', '--limit', '300', '--out', report, '--key', `${keys}.key`);
      expect(cal.code).toBe(0);
      expect(cal.out).toMatch(/^bundle {4}.*manifest updated/m);
      const thresholds = (await manifest()).exitPolicy.thresholds;
      expect(thresholds).toHaveLength(2);
      expect(existsSync(path.join(report, 'calibration.md'))).toBe(true);

      const images = path.join(CALIBRATION, 'bag');
      const count = (await fsp.readdir(images)).filter((f) => f.endsWith('.png')).length;
      expect((await runCli('trust', 'add', `${keys}.pub`, '--trust-dir', trust)).code).toBe(0);
      const run = await runCli('run', bundle, images, '--json', '--trust-dir', trust);
      expect(run.code).toBe(0);
      const rows = run.out.trim().split('\n').map((l) => JSON.parse(l) as { label: string; exit: number });
      expect(rows).toHaveLength(count);
      for (const row of rows) {
        expect(LABELS).toContain(row.label);
        expect([0, 1, 2]).toContain(row.exit);
      }
    });
  });
});
