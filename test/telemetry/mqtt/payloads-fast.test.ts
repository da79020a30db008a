// The collector's fast metrics check must never accept what the zod schema refuses: every
// mutation of a valid window below is run through both, and where the fast check says yes, zod
// must too (the fast check may say no to valid windows; zod then decides).
import { describe, expect, it } from 'vitest';
import { MetricsWindowSchema, decodePayload, isPlainValidMetricsWindow } from '../../../src/telemetry/payloads.js';
import { windowBody } from './fixtures.js';

const base = () => ({ id: 3, bdSeq: 1, seq: 7, ...windowBody(3, 'dev-1') }) as Record<string, unknown>;

const BAD_VALUES: unknown[] = [undefined, null, -1, 1.5, 256, 2 ** 60, Number.MAX_SAFE_INTEGER, '1', true, [], {}, [1], 'x', 'a/b', '', NaN];

function* mutations(): Generator<[string, unknown]> {
  const b = base();
  yield ['valid', b];
  const { temperatureC: _t, accuracy: _a, ...minimal } = b;
  yield ['minimal', minimal];
  for (const k of [...Object.keys(b), 'extra', '__proto__']) {
    for (const v of BAD_VALUES) {
      const m = { ...base() };
      if (v === undefined) delete m[k];
      else m[k] = v;
      yield [`${k}=${String(v)}`, m];
    }
  }
  for (const path of [['latencyMs', 'endToEnd'], ['latencyMs', 'stages'], ['energy'], ['accuracy']] as const) {
    for (const v of [...BAD_VALUES, { p50: 1, p95: 2, p99: 3, x: 1 }, [{ p50: -1, p95: 2, p99: 3 }], { joules: 1, meanWatts: 1, source: 'x', meter: 'model' }, { correct: 6, labelled: 5 }]) {
      const m = structuredClone(base()) as Record<string, Record<string, unknown>>;
      if (path.length === 1) m[path[0]] = v as never;
      else m[path[0]]![path[1]] = v;
      yield [`${path.join('.')}=${JSON.stringify(v)}`, m];
    }
  }
  for (const [f, v] of [['meter', 'rapl'], ['meter', 'nope'], ['source', 'sensor'], ['joules', -0.1], ['meanWatts', '1']] as const) {
    const m = structuredClone(base()) as { energy: Record<string, unknown> };
    m.energy[f] = v;
    yield [`energy.${f}=${v}`, m];
  }
  yield ['histogram sum off', { ...base(), exitHistogram: [6, 3, 2] }];
  yield ['empty histogram', { ...base(), exitHistogram: [], count: 0 }];
  yield ['end before start', { ...base(), windowEnd: 1 }];
  yield ['array', [base()]];
}

describe('fast metrics check', () => {
  it('accepts only what the zod schema accepts, and accepts the usual window', () => {
    let fastYes = 0;
    for (const [name, m] of mutations()) {
      const json = JSON.parse(JSON.stringify(m) ?? 'null');
      if (isPlainValidMetricsWindow(json)) {
        fastYes++;
        expect(MetricsWindowSchema.safeParse(json).success, name).toBe(true);
      }
    }
    expect(isPlainValidMetricsWindow(base())).toBe(true);
    expect(fastYes).toBeGreaterThan(3);
  });

  it('decodePayload gives the same window and the same refusals either way', () => {
    const b = base();
    expect(decodePayload('metrics', JSON.stringify(b))).toEqual(MetricsWindowSchema.parse(b));
    expect(() => decodePayload('metrics', JSON.stringify({ ...b, count: 11 }))).toThrow(/exitHistogram/);
  });
});
