// Window integration (counters vs trapezoid, wrap-around) and per-inference attribution with and
// without the idle baseline.
import { describe, expect, it } from 'vitest';
import { EnergySensorError, attributeEnergy, integrateJoules, type EnergyReading } from '../../src/telemetry/energy/index.js';

const w = (at: number, watts: number): EnergyReading => ({ at, watts, source: 'sensor' });
const j = (at: number, joules: number, source: 'sensor' | 'model' = 'sensor'): EnergyReading => ({ at, joules, source });

describe('integrateJoules', () => {
  it('integrates watts with the trapezoid rule', () => {
    expect(integrateJoules([w(0, 2), w(1000, 4), w(1500, 4)])).toBeCloseTo(3 + 2, 12);
  });

  it('prefers a counter over watts when every reading has one', () => {
    expect(integrateJoules([{ ...j(0, 5), watts: 100 }, { ...j(1000, 7), watts: 100 }])).toBe(2);
  });

  it('adds the wrap range when a counter steps backwards', () => {
    expect(integrateJoules([j(0, 90), j(100, 95), j(200, 3)], 100)).toBe(13);
  });

  it('a backwards counter without a wrap range is an error, as are out-of-order readings', () => {
    expect(() => integrateJoules([j(0, 5), j(100, 3)])).toThrow(EnergySensorError);
    expect(() => integrateJoules([w(100, 1), w(0, 1)])).toThrow(/out of time order/);
  });

  it('fewer than two readings hold no energy', () => {
    expect(integrateJoules([w(0, 5)])).toBe(0);
  });
});

describe('attributeEnergy', () => {
  const readings = [j(0, 0), j(500, 5), j(1000, 10)]; // 10 J over 1 s
  const inferences = [
    { id: 'a', start: 100, end: 400 },
    { id: 'b', start: 500, end: 600 },
  ];

  it('subtracts the idle baseline, splits dynamic energy by duration share, charges idle over each run', () => {
    const r = attributeEnergy({ readings, inferences, idleWatts: 2 });
    expect(r).toMatchObject({ joules: 10, idleSubtracted: true, source: 'sensor', startMs: 0, endMs: 1000 });
    expect(r.idleBaselineJoules).toBeCloseTo(2, 12);
    expect(r.inferences[0]!.dynamicJoules).toBeCloseTo(6, 12);
    expect(r.inferences[0]!.joules).toBeCloseTo(6.6, 12);
    expect(r.inferences[1]!.dynamicJoules).toBeCloseTo(2, 12);
    expect(r.inferences[1]!.joules).toBeCloseTo(2.2, 12);
    expect(r.unattributedJoules).toBeCloseTo(1.2, 12); // idle power over the 600 ms nobody ran
  });

  it('without an idle baseline the whole window is split by duration share', () => {
    const r = attributeEnergy({ readings, inferences });
    expect(r.idleSubtracted).toBe(false);
    expect(r.inferences.map((i) => i.joules)).toEqual([7.5, 2.5]);
    expect(r.inferences[0]!.dynamicJoules).toBeUndefined();
    expect(r.unattributedJoules).toBe(0);
  });

  it('clips inferences to the window and never charges negative dynamic energy', () => {
    const r = attributeEnergy({ readings: [j(0, 0, 'model'), j(1000, 1, 'model')], inferences: [{ id: 'x', start: -300, end: 200 }], idleWatts: 2 });
    expect(r.source).toBe('model');
    expect(r.inferences[0]).toMatchObject({ durationMs: 200, dynamicJoules: 0 });
    expect(r.inferences[0]!.joules).toBeCloseTo(0.4, 12);
  });

  it('with no inferences everything is unattributed; a reversed span is an error', () => {
    expect(attributeEnergy({ readings, inferences: [] }).unattributedJoules).toBe(10);
    expect(() => attributeEnergy({ readings, inferences: [{ id: 'z', start: 5, end: 1 }] })).toThrow(/inference z.*ends before it starts/);
    expect(() => attributeEnergy({ readings: [j(0, 0)], inferences })).toThrow(/at least two readings/);
  });
});
