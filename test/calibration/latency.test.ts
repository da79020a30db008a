// Latency sources: the cost model against hand-computed MACs × ns, the profile file format
// (round trip, and a wrong field reported with file and field), percentile summaries.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LATENCY_PROFILE_FORMAT,
  modelStageLatency,
  readLatencyProfile,
  stageLatencyFrom,
  summarise,
  writeLatencyProfile,
  type LatencyProfile,
} from '../../src/calibration/latency.js';
import type { Manifest } from '../../src/bundle/manifest.js';
import { loadDeviceProfile } from '../../src/devices/load.js';
import { ValidationError } from '../../src/util/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-latency-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const profile: LatencyProfile = {
  format: LATENCY_PROFILE_FORMAT,
  version: 1,
  source: 'measure',
  created: '2026-11-27T01:00:00.000Z',
  bundle: { model: 'm', manifestSha256: 'a'.repeat(64), precision: 'fp32' },
  host: { device: null, description: 'test host', threads: 1, warmup: 5 },
  stages: [
    { stage: 'exit_0', macs: 100, batches: [{ batch: 1, meanMs: 0.2, p50Ms: 0.19, p90Ms: 0.25, p95Ms: 0.3, p99Ms: 0.4, runs: 10 }] },
    { stage: 'exit_1', macs: 300, batches: [{ batch: 1, meanMs: 0.5, p50Ms: 0.45, p90Ms: 0.6, p95Ms: 0.7, p99Ms: 0.9, runs: 10 }] },
  ],
};

describe('cost-model latency', () => {
  it('equals overhead + MACs × ns/MAC at the bundle precision (rpi4 fp32 and int8)', async () => {
    const rpi4 = await loadDeviceProfile('rpi4');
    const manifest = { target: { device: 'rpi4', precision: 'fp32' }, stages: [{ macs: 1_000_000 }, { macs: 2_500_000 }] } as unknown as Manifest;
    const fp32 = modelStageLatency(manifest, rpi4);
    // rpi4: overhead 0.1 ms, fp32 conv 0.17 ns/MAC → 0.1 + 1e6 × 0.17 / 1e6 = 0.27 ms.
    expect(fp32.stageMs[0]).toBeCloseTo(0.1 + 0.17, 12);
    expect(fp32.stageMs[1]).toBeCloseTo(0.1 + 2.5 * 0.17, 12);
    expect(fp32.description).toMatch(/estimate/);
    const int8 = modelStageLatency({ ...manifest, target: { device: 'rpi4', precision: 'int8' } } as Manifest, rpi4, 8);
    expect(int8.stageMs[0]).toBeCloseTo(0.1 + 8 * 0.092, 12);
    // No fp16 costs in the rpi4 profile: fp32 is the fallback, and said so.
    const fp16 = modelStageLatency({ ...manifest, target: { device: 'rpi4', precision: 'fp16' } } as Manifest, rpi4);
    expect(fp16.precisionUsed).toBe('fp32');
  });
});

describe('latency profile file', () => {
  it('round-trips through write and read', async () => {
    const f = path.join(dir, 'p.json');
    await writeLatencyProfile(f, profile);
    expect(await readLatencyProfile(f)).toEqual(profile);
    expect(stageLatencyFrom(profile)).toEqual([0.2, 0.5]);
    expect(stageLatencyFrom(profile, 1, 95)).toEqual([0.3, 0.7]);
    expect(() => stageLatencyFrom(profile, 8)).toThrow(/no batch-8 numbers.*--batch 8/);
  });

  it('a wrong field is reported with the file and the field path', async () => {
    const f = path.join(dir, 'bad.json');
    const bad = JSON.parse(JSON.stringify(profile)) as Record<string, unknown>;
    ((bad.stages as Record<string, unknown>[])[1]!.batches as Record<string, unknown>[])[0]!.meanMs = 'fast';
    delete (bad as { source?: string }).source;
    await fsp.writeFile(f, JSON.stringify(bad));
    const err = await readLatencyProfile(f).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    const msg = (err as Error).message;
    expect(msg).toContain(`${f}: stages[1].batches[0].meanMs`);
    expect(msg).toContain(`${f}: source`);
    expect(msg).toMatch(/2 problems/);
  });

  it('not JSON → an error naming the file', async () => {
    const f = path.join(dir, 'nojson.json');
    await fsp.writeFile(f, '{nope');
    await expect(readLatencyProfile(f)).rejects.toThrow(f);
  });
});

describe('summarise', () => {
  it('keeps mean and nearest-rank percentiles', () => {
    const s = summarise(Array.from({ length: 100 }, (_, i) => i + 1), 1);
    expect(s).toMatchObject({ meanMs: 50.5, p50Ms: 50, p90Ms: 90, p95Ms: 95, p99Ms: 99, runs: 100 });
  });
});
