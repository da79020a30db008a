// Per-stage latency in the compile report: the median helper, a multi-exit compile that times
// every stage float vs compiled (positive numbers, one row per stage, the table columns and the
// "this machine, not the device" line), and --no-latency leaving both out.
import { beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { compileModel, median } from '../../src/compiler/index.js';
import { readModel, writeModel } from '../../src/onnx/index.js';
import { runCli } from '../cli/helpers.js';
import { SINGLE, SINGLE_LABELS, SINGLE_PRE, scratch, zooCopy } from './helpers.js';

let dir: string;
let model: string;
beforeAll(async () => {
  dir = await scratch('latency');
  model = await zooCopy(dir);
});

describe('compile latency', () => {
  it('median: middle value, mean of the two middle ones, NaN for none', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('times every stage float vs compiled at batch 1 with one thread', async () => {
    const r = await compileModel({ model, device: 'rpi4', out: path.join(dir, 'fp16'), precision: 'fp16', latencyRuns: 30 });
    const lat = r.report.latency!;
    expect(lat).toMatchObject({ runs: 30, threads: 1, batch: 1 });
    expect(lat.machine).toMatch(/not the target device's/);
    expect(lat.stages.map((s) => s.stage)).toEqual(r.report.stages.map((s) => s.file));
    for (const s of lat.stages) {
      expect(s.floatMs).toBeGreaterThan(0);
      expect(s.compiledMs).toBeGreaterThan(0);
      expect(s.speedup).toBeCloseTo(s.floatMs / s.compiledMs, 6);
    }
  });

  it('a model exported with a fixed batch size is timed at that size', async () => {
    const m = await readModel(SINGLE);
    for (const v of [...m.graph.input, ...m.graph.output]) {
      const dim = v.type?.value.case === 'tensorType' ? v.type.value.value.shape?.dim[0] : undefined;
      if (dim) dim.value = { case: 'dimValue', value: 2n };
    }
    const file = path.join(dir, 'single-batch2.onnx');
    await writeModel(m, file);
    const r = await compileModel({ model: file, device: 'x86-host', precision: 'fp32', out: path.join(dir, 'batch2'), preprocess: SINGLE_PRE, labels: SINGLE_LABELS, latencyRuns: 10 });
    expect(r.report.latency).toMatchObject({ batch: 2, runs: 10 });
    expect(r.report.latency!.stages[0]!.floatMs).toBeGreaterThan(0);
  });

  it('the CLI prints the columns and the caveat; --no-latency leaves both out', async () => {
    const on = await runCli('compile', model, '--device', 'rpi4', '--precision', 'fp32', '--out', path.join(dir, 'on'));
    expect(on.code, on.err).toBe(0);
    expect(on.out).toMatch(/fp32 ms\s+fp32 ms\s+speed-up/);
    expect(on.out).toMatch(/^latency\s+median of 200 interleaved runs .*this machine's numbers/m);
    const off = await runCli('compile', model, '--device', 'rpi4', '--precision', 'fp32', '--out', path.join(dir, 'off'), '--no-latency');
    expect(off.code, off.err).toBe(0);
    expect(off.out).not.toMatch(/speed-up|^latency/m);
  });
});
