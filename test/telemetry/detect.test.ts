// Choosing a meter: the profile's sensor first, then auto-detection in ENERGY_DETECT_ORDER, then
// the power model with exactly one warning line that names what was skipped and why.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENERGY_SENSORS, loadDeviceProfile } from '../../src/devices/index.js';
import { ENERGY_DETECT_ORDER, ENERGY_METERS, detectEnergyMeter, type DetectProfile } from '../../src/telemetry/energy/index.js';
import { denyRead, fakeExec, fixture, fixtureText, tempTree } from './helpers.js';

const EMPTY = fixture('empty-root');
const noCommands = fakeExec({});

async function profile(id: string): Promise<DetectProfile> {
  return loadDeviceProfile(id);
}

/** One temp root holding several fixture trees, as a machine with several sensors would. */
async function mergedRoot(...names: string[]): Promise<string> {
  const [first, ...rest] = names;
  const root = await tempTree(first!);
  for (const n of rest) await fsp.cp(fixture(n), root, { recursive: true });
  return root;
}

describe('detectEnergyMeter', () => {
  it('uses the profile\'s ina3221-hwmon sensor (Orin Nano) and skips its NC channel', async () => {
    const r = await detectEnergyMeter({ profile: await profile('jetson-orin-nano'), root: fixture('jp5-hwmon'), exec: noCommands });
    expect(r.meter.kind).toBe('ina3221-hwmon');
    expect(r.warning).toBeUndefined();
    expect(r.skipped).toEqual([]);
    const reading = await r.meter.read();
    expect(Object.keys(reading.rails!)).toEqual(['VDD_IN', 'VDD_CPU_GPU_CV']);
  });

  it('uses the profile\'s ina3221-iio sensor (Nano, JetPack 4)', async () => {
    const r = await detectEnergyMeter({ profile: await profile('jetson-nano'), root: fixture('jp4-iio'), exec: noCommands });
    expect(r.meter.kind).toBe('ina3221-iio');
    expect((await r.meter.read()).watts).toBe(2.391);
  });

  it('uses the profile\'s rpi5-pmic sensor with its input estimate', async () => {
    const exec = fakeExec({ vcgencmd: fixtureText('vcgencmd-pmic_read_adc.txt') });
    const r = await detectEnergyMeter({ profile: await profile('rpi5'), root: EMPTY, exec });
    expect(r.meter.kind).toBe('rpi5-pmic');
    expect((await r.meter.read()).watts).toBeCloseTo(2.3534645690 * 1.1451 + 0.5879, 8);
    expect(r.meter.describe()).toContain('×1.1451 + 0.5879 W');
  });

  it('auto-detects in order: Jetson hwmon before RAPL before nvidia-smi', async () => {
    const root = await mergedRoot('rapl', 'jp5-hwmon');
    const exec = fakeExec({ 'nvidia-smi': fixtureText('nvidia-smi-power.csv') });
    const p = await profile('x86-host');
    expect((await detectEnergyMeter({ profile: p, root, exec })).meter.kind).toBe('ina3221-hwmon');
    expect((await detectEnergyMeter({ profile: p, root: fixture('rapl'), exec })).meter.kind).toBe('rapl');
    expect((await detectEnergyMeter({ profile: p, root: EMPTY, exec })).meter.kind).toBe('nvml');
  });

  it('an unreadable RAPL counter falls back to the power model with the one-line warning', async () => {
    const root = await tempTree('rapl');
    const file = path.join(root, 'sys/class/powercap/intel-rapl:0/energy_uj');
    const restore = denyRead(file);
    try {
      const r = await detectEnergyMeter({ profile: await profile('rpi4'), root, exec: noCommands });
      expect(r.meter.kind).toBe('model');
      expect(r.meter.source).toBe('model');
      expect(r.skipped).toEqual([{ kind: 'rapl', reason: `${file} not readable (root-only since Linux 5.10)` }]);
      expect(r.warning).toBe(`warn: energy sensor 'rapl' skipped: ${file} not readable (root-only since Linux 5.10) — using the rpi4 power model (1.6 W idle, 7.2 W busy)`);
    } finally {
      restore();
    }
  });

  it('a configured sensor that fails is named, with every other skipped one, on one line', async () => {
    const root = await tempTree('rapl');
    await fsp.writeFile(path.join(root, 'sys/class/powercap/intel-rapl:0/energy_uj'), 'garbage\n');
    const exec = fakeExec({ vcgencmd: new Error('Command not registered') });
    const r = await detectEnergyMeter({ profile: await profile('rpi5'), root, exec });
    expect(r.meter.kind).toBe('model');
    expect(r.skipped.map((s) => s.kind)).toEqual(['rpi5-pmic', 'rapl']);
    expect(r.warning).toMatch(/^warn: energy sensors skipped: 'rpi5-pmic' \(vcgencmd pmic_read_adc: failed: Command not registered.*\); 'rapl' \(.*energy_uj: not a number.*"garbage\\n"\)\) — using the rpi5 power model \(2\.8 W idle, 13\.8 W busy\)$/);
    expect(r.warning).not.toContain('\n');
  });

  it('no sensor anywhere: the warning says the profile has none and what was looked for', async () => {
    const r = await detectEnergyMeter({ profile: await profile('rpi4'), root: EMPTY, exec: noCommands });
    expect(r.meter.kind).toBe('model');
    expect(r.skipped).toEqual([]);
    expect(r.warning).toBe(`warn: no energy sensor (profile says 'none', none of ${ENERGY_DETECT_ORDER.join(', ')} found) — using the rpi4 power model (1.6 W idle, 7.2 W busy)`);
  });

  it('autoDetect: false looks at the profile only', async () => {
    const r = await detectEnergyMeter({ profile: await profile('rpi4'), root: fixture('rapl'), exec: noCommands, autoDetect: false });
    expect(r.meter.kind).toBe('model');
    expect(r.warning).toBe("warn: no energy sensor (profile says 'none') — using the rpi4 power model (1.6 W idle, 7.2 W busy)");
  });

  it('the registry covers every sensor kind a profile can name, and detection tries each once', () => {
    const kinds = Object.keys(ENERGY_SENSORS).filter((k) => k !== 'none').sort();
    expect(Object.keys(ENERGY_METERS).sort()).toEqual(kinds);
    expect([...ENERGY_DETECT_ORDER].sort()).toEqual(kinds);
    for (const entry of Object.values(ENERGY_METERS)) expect(entry.needs.length).toBeGreaterThan(0);
  });
});
