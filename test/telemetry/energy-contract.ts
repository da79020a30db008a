// The contract every EnergyMeter meets, run once per implementation by energy-meters.test.ts:
// readings move forward in time, are never negative, say where they came from, integrate to a
// plausible energy over a short window, and describe() names the kind and what is read.
import { describe, expect, it } from 'vitest';
import { integrateJoules, type EnergyMeter, type EnergyReading } from '../../src/telemetry/energy/index.js';

export interface ContractSubject {
  meter: EnergyMeter;
  /** Move time (and, for counters, the counter) forward by `ms`. */
  advance(ms: number): Promise<void>;
  /** Strings describe() must contain (paths or commands). */
  mentions: string[];
  /** Bounds on average power over the window, in watts. */
  watts: [number, number];
}

export function energyContract(name: string, make: () => Promise<ContractSubject>): void {
  describe(`EnergyMeter contract: ${name}`, () => {
    it('reads forward in time, non-negative, with a source, integrating to plausible joules', async () => {
      const s = await make();
      const readings: EnergyReading[] = [];
      for (let i = 0; i < 5; i++) {
        if (i > 0) await s.advance(100);
        readings.push(await s.meter.read());
      }
      for (let i = 1; i < readings.length; i++) expect(readings[i]!.at).toBeGreaterThan(readings[i - 1]!.at);
      for (const r of readings) {
        expect(r.source).toBe(s.meter.source);
        expect(['sensor', 'model']).toContain(r.source);
        expect(r.watts !== undefined || r.joules !== undefined).toBe(true);
        if (r.watts !== undefined) expect(r.watts).toBeGreaterThanOrEqual(0);
        if (r.joules !== undefined) expect(r.joules).toBeGreaterThanOrEqual(0);
        for (const w of Object.values(r.rails ?? {})) expect(w).toBeGreaterThanOrEqual(0);
      }
      const seconds = (readings[4]!.at - readings[0]!.at) / 1000;
      const joules = integrateJoules(readings, s.meter.wrapJoules);
      expect(joules / seconds).toBeGreaterThanOrEqual(s.watts[0]);
      expect(joules / seconds).toBeLessThanOrEqual(s.watts[1]);
    });

    it('describe() names its kind and what it reads', async () => {
      const s = await make();
      const text = s.meter.describe();
      expect(text.startsWith(s.meter.kind + ':')).toBe(true);
      for (const m of s.mentions) expect(text).toContain(m);
    });
  });
}
