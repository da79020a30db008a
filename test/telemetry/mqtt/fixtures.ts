// Sample payloads shared by the telemetry wire-format, outbox and publisher tests.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BirthInfo, WindowInput } from '../../../src/telemetry/index.js';

export const BIRTH_INFO: BirthInfo = {
  profile: 'rpi4',
  bundle: { name: 'mnist-exits', version: '1.2.0', manifestSha256: 'a'.repeat(64), precision: 'int8', thresholds: [0.9, 0.8] },
  runtime: { edgeexit: '0.1.0', node: process.versions.node },
};

export function windowInput(i: number): WindowInput {
  return {
    windowStart: 1_700_000_000_000 + i * 10_000,
    windowEnd: 1_700_000_000_000 + (i + 1) * 10_000,
    count: 10,
    exitHistogram: [6, 3, 1],
    latencyMs: { endToEnd: { p50: 3, p95: 7, p99: 9 }, stages: [{ p50: 1, p95: 2, p99: 3 }, { p50: 2, p95: 4, p99: 5 }, { p50: 3, p95: 5, p99: 6 }] },
    energy: { joules: 1.5, meanWatts: 0.15, source: 'model', meter: 'model' },
    temperatureC: 51.5,
    accuracy: { correct: 4, labelled: 5 },
  };
}

export function windowBody(i: number, device = 'dev-1') {
  return { ...windowInput(i), device, droppedWindows: 0 };
}

export async function tempDir(tag: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), `edgeexit-${tag}-`));
}
