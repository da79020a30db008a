// Per-meter behaviour against the fixtures: the units and arithmetic of each sensor, the rails
// that must be skipped, counter wrap-around, the real vcgencmd and nvidia-smi line formats, the
// power-model fallback, and errors that name the file and the bad value.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  EnergySensorError,
  Ina3221HwmonMeter,
  Ina3221IioMeter,
  NvidiaSmiMeter,
  PowerModelMeter,
  RaplMeter,
  Rpi5PmicMeter,
  integrateJoules,
  modelWatts,
  parseNvidiaSmi,
  parsePmicReadAdc,
  pmicRailWatts,
} from '../../src/telemetry/energy/index.js';
import { InputError } from '../../src/util/errors.js';
import { denyRead, fakeClock, fakeExec, fixture, fixtureText, tempTree } from './helpers.js';

const IIO_DEVICE = '/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0';
const HWMON_GLOB = '/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*';
const HWMON_DIR = 'sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3';
const RAPL_DIR = 'sys/class/powercap/intel-rapl:0';

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('ina3221-iio (JetPack 4)', () => {
  it('reads in_power<N>_input in mW, names rails from rail_name_<N>, takes POM_5V_IN as input', async () => {
    const r = await new Ina3221IioMeter({ root: fixture('jp4-iio'), device: IIO_DEVICE }).read();
    expect(r.rails).toEqual({ POM_5V_IN: 2.391, POM_5V_GPU: 0.398, POM_5V_CPU: 0.797 });
    expect(r.watts).toBe(2.391);
    expect(r.source).toBe('sensor');
  });

  it('follows the profile\'s channel list and input rail', async () => {
    const m = new Ina3221IioMeter({ root: fixture('jp4-iio'), device: IIO_DEVICE, rails: [{ channel: 1, label: 'POM_5V_GPU' }], inputRail: 'POM_5V_GPU' });
    expect(await m.read()).toMatchObject({ watts: 0.398, rails: { POM_5V_GPU: 0.398 } });
  });

  it('says so when the named input rail is not among the rails', async () => {
    const err = await rejection(new Ina3221IioMeter({ root: fixture('jp4-iio'), device: IIO_DEVICE, inputRail: 'VDD_IN' }).read());
    expect(err).toBeInstanceOf(EnergySensorError);
    expect(err.message).toMatch(/no module input rail.*VDD_IN.*POM_5V_IN, POM_5V_GPU, POM_5V_CPU/);
  });
});

describe('ina3221-hwmon (JetPack 5+)', () => {
  it('computes power as mV × mA, skips NC channels and integrates VDD_IN', async () => {
    const r = await new Ina3221HwmonMeter({ root: fixture('jp5-hwmon'), hwmonGlob: HWMON_GLOB }).read();
    expect(Object.keys(r.rails!)).toEqual(['VDD_IN', 'VDD_CPU_GPU_CV']);
    expect(r.rails!.VDD_IN).toBeCloseTo((5064 * 1120) / 1e6, 9);
    expect(r.rails!.VDD_CPU_GPU_CV).toBeCloseTo((5056 * 280) / 1e6, 9);
    expect(r.watts).toBe(r.rails!.VDD_IN);
  });

  it('finds hwmon<k> through the glob whatever k is this boot', async () => {
    const root = await tempTree('jp5-hwmon');
    await fsp.rename(path.join(root, HWMON_DIR), path.join(root, HWMON_DIR.replace('hwmon3', 'hwmon7')));
    const m = new Ina3221HwmonMeter({ root, hwmonGlob: HWMON_GLOB });
    await m.read();
    expect(m.describe()).toContain('hwmon7');
  });

  it('takes POM_5V_IN as the input rail when that is the label, and honours a configured one', async () => {
    const root = await tempTree('jp5-hwmon');
    await fsp.writeFile(path.join(root, HWMON_DIR, 'in1_label'), 'POM_5V_IN\n');
    expect((await new Ina3221HwmonMeter({ root, hwmonGlob: HWMON_GLOB }).read()).watts).toBeCloseTo(5.67168, 9);
    const cv = await new Ina3221HwmonMeter({ root, hwmonGlob: HWMON_GLOB, inputRail: 'VDD_CPU_GPU_CV' }).read();
    expect(cv.watts).toBeCloseTo(1.41568, 9);
  });

  it('clamps the shunt\'s small negative current on an idle rail to 0 W', async () => {
    const root = await tempTree('jp5-hwmon');
    await fsp.writeFile(path.join(root, HWMON_DIR, 'curr2_input'), '-3\n');
    expect((await new Ina3221HwmonMeter({ root, hwmonGlob: HWMON_GLOB }).read()).rails!.VDD_CPU_GPU_CV).toBe(0);
  });

  it('a malformed value is an error naming the file and the value', async () => {
    const root = await tempTree('jp5-hwmon');
    const file = path.join(root, HWMON_DIR, 'curr1_input');
    await fsp.writeFile(file, '12a4\n');
    const err = await rejection(new Ina3221HwmonMeter({ root, hwmonGlob: HWMON_GLOB }).read());
    expect(err).toBeInstanceOf(EnergySensorError);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain(file);
    expect(err.message).toContain('"12a4\\n"');
  });

  it('a missing hwmon directory says which glob matched nothing', async () => {
    const err = await rejection(new Ina3221HwmonMeter({ root: fixture('jp4-iio'), hwmonGlob: HWMON_GLOB }).read());
    expect(err.message).toMatch(/hwmon\*: no INA3221 hwmon directory found/);
  });
});

describe('rpi5-pmic', () => {
  const output = fixtureText('vcgencmd-pmic_read_adc.txt');

  it('parses the real line format, pairing NAME_A current with NAME_V volt', () => {
    const rails = parsePmicReadAdc(output);
    expect(rails.get('VDD_CORE')).toEqual({ amps: 1.4288, volts: 0.8873 });
    expect(rails.get('EXT5V')).toEqual({ volts: 5.05716 });
    const watts = pmicRailWatts(rails);
    expect(Object.keys(watts)).toHaveLength(12);
    expect(watts).not.toHaveProperty('EXT5V');
    expect(watts).not.toHaveProperty('BATT');
    expect(watts.VDD_CORE).toBeCloseTo(1.4288 * 0.8873, 12);
  });

  it('sums V×I over the rails, and applies the profile\'s input estimate when given', async () => {
    const exec = fakeExec({ vcgencmd: output });
    const raw = await new Rpi5PmicMeter({ exec }).read();
    expect(raw.watts).toBeCloseTo(2.3534645690, 8);
    expect(exec.calls[0]).toEqual(['vcgencmd', 'pmic_read_adc']);
    const est = await new Rpi5PmicMeter({ exec, inputEstimate: { scale: 1.1451, offsetWatts: 0.5879 } }).read();
    expect(est.watts).toBeCloseTo(2.3534645690 * 1.1451 + 0.5879, 8);
    expect(est.rails).toEqual(raw.rails);
  });

  it('rejects an unrecognised line, quoting it', () => {
    expect(() => parsePmicReadAdc('VDD_CORE_A current(7)=1.4A\nthrottled=0x0\n')).toThrow(/unrecognised line.*"throttled=0x0"/);
    expect(() => parsePmicReadAdc('VDD_CORE_A current(7)=1.4V\n')).toThrow(/inconsistent units/);
    expect(() => parsePmicReadAdc('\n')).toThrow(/no readings/);
  });

  it('a failing command names the command and why', async () => {
    const exec = fakeExec({ vcgencmd: new Error('Command not registered') });
    const err = await rejection(new Rpi5PmicMeter({ exec }).read());
    expect(err.message).toMatch(/vcgencmd pmic_read_adc: failed: Command not registered/);
  });
});

describe('rapl', () => {
  it('reads µJ as joules and integrates across a wrap at max_energy_range_uj', async () => {
    const root = await tempTree('rapl');
    const dir = path.join(root, RAPL_DIR);
    await fsp.writeFile(path.join(dir, 'max_energy_range_uj'), '1000000000\n'); // wraps at 1000 J
    await fsp.writeFile(path.join(dir, 'energy_uj'), '999000000\n');
    const clock = fakeClock();
    const m = new RaplMeter({ root, now: clock.now });
    const a = await m.read();
    expect(a.joules).toBe(999);
    expect(m.wrapJoules).toBe(1000);
    clock.advance(1000);
    await fsp.writeFile(path.join(dir, 'energy_uj'), '2000000\n'); // 1 J to the wrap, 2 J after
    const b = await m.read();
    expect(integrateJoules([a, b], m.wrapJoules)).toBeCloseTo(3, 9);
  });

  it('permission denied says energy_uj is root-only since Linux 5.10', async () => {
    const root = await tempTree('rapl');
    const file = path.join(root, RAPL_DIR, 'energy_uj');
    const restore = denyRead(file);
    const err = await rejection(new RaplMeter({ root }).read()).finally(restore);
    expect(err).toBeInstanceOf(EnergySensorError);
    expect(err.message).toContain(file);
    expect(err.message).toContain('root-only since Linux 5.10');
  });

  it('a malformed counter names the file and value', async () => {
    const root = await tempTree('rapl');
    const file = path.join(root, RAPL_DIR, 'energy_uj');
    await fsp.writeFile(file, 'N/A\n');
    const err = await rejection(new RaplMeter({ root }).read());
    expect(err.message).toContain(file);
    expect(err.message).toContain('"N/A\\n"');
  });
});

describe('nvml via nvidia-smi', () => {
  it('queries power.draw as csv without units and parses watts', async () => {
    const exec = fakeExec({ 'nvidia-smi': fixtureText('nvidia-smi-power.csv') });
    const r = await new NvidiaSmiMeter({ exec }).read();
    expect(r).toMatchObject({ watts: 35.27, source: 'sensor' });
    expect(r.joules).toBeUndefined();
    expect(exec.calls[0]).toEqual(['nvidia-smi', '--query-gpu=index,power.draw', '--format=csv,noheader,nounits', '--id=0']);
  });

  it('reads a total-energy column (mJ) when the field is configured', async () => {
    const exec = fakeExec({ 'nvidia-smi': fixtureText('nvidia-smi-power-energy.csv') });
    const r = await new NvidiaSmiMeter({ exec, energyField: 'total_energy' }).read();
    expect(r.joules).toBeCloseTo(812345.678, 6);
    expect(exec.calls[0]![1]).toBe('--query-gpu=index,power.draw,total_energy');
  });

  it('picks the requested GPU among several rows', () => {
    expect(parseNvidiaSmi('0, 35.27\n1, 80.50\n', false).map((r) => r.watts)).toEqual([35.27, 80.5]);
  });

  it('"[N/A]" is an error, not zero watts', async () => {
    const exec = fakeExec({ 'nvidia-smi': fixtureText('nvidia-smi-na.csv') });
    const err = await rejection(new NvidiaSmiMeter({ exec }).read());
    expect(err.message).toMatch(/power\.draw is not a reading.*\[N\/A\]/);
  });
});

describe('power model fallback', () => {
  it('P(u) = idle + u·(busy − idle), clamped to [0, 1]', () => {
    const p = { idleWatts: 1.6, busyWatts: 7.2 };
    expect(modelWatts(p, 0)).toBe(1.6);
    expect(modelWatts(p, 1)).toBe(7.2);
    expect(modelWatts(p, 0.25)).toBeCloseTo(3, 12);
    expect(modelWatts(p, 2)).toBe(7.2);
    expect(modelWatts(p, -1)).toBe(1.6);
  });

  it('counts joules from the utilisation of each interval, and marks readings as model', async () => {
    const clock = fakeClock();
    const u = [0, 1, 0];
    let i = 0;
    const m = new PowerModelMeter({ power: { idleWatts: 2, busyWatts: 10 }, utilisation: () => u[i++]!, now: clock.now });
    const a = await m.read();
    clock.advance(1000);
    const b = await m.read(); // busy second: 10 J
    clock.advance(500);
    const c = await m.read(); // idle half second: 1 J
    expect([a.joules, b.joules, c.joules]).toEqual([0, 10, 11]);
    expect([a, b, c].every((r) => r.source === 'model')).toBe(true);
    expect(integrateJoules([a, b, c])).toBe(11);
  });

  it('rejects a model with busy below idle', () => {
    expect(() => new PowerModelMeter({ power: { idleWatts: 5, busyWatts: 2 } })).toThrow(/0 <= idleWatts <= busyWatts/);
  });
});
