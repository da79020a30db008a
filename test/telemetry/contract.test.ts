// Runs the shared EnergyMeter contract (energy-contract.ts) against every implementation, each
// pointed at its fixture tree or recorded command output.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Ina3221HwmonMeter, Ina3221IioMeter, NvidiaSmiMeter, PowerModelMeter, RaplMeter, Rpi5PmicMeter } from '../../src/telemetry/energy/index.js';
import { energyContract } from './energy-contract.js';
import { fakeClock, fakeExec, fixture, fixtureText, tempTree } from './helpers.js';

const IIO_DEVICE = '/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0';
const HWMON_GLOB = '/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*';

energyContract('ina3221-iio (JetPack 4)', async () => {
  const clock = fakeClock();
  return {
    meter: new Ina3221IioMeter({ root: fixture('jp4-iio'), device: IIO_DEVICE, now: clock.now }),
    advance: async (ms) => clock.advance(ms),
    mentions: ['iio:device0', 'in_power'],
    watts: [2, 3],
  };
});

energyContract('ina3221-hwmon (JetPack 5+)', async () => {
  const clock = fakeClock();
  return {
    meter: new Ina3221HwmonMeter({ root: fixture('jp5-hwmon'), hwmonGlob: HWMON_GLOB, now: clock.now }),
    advance: async (ms) => clock.advance(ms),
    mentions: ['hwmon', 'curr<N>_input'],
    watts: [5, 6],
  };
});

energyContract('rpi5-pmic', async () => {
  const clock = fakeClock();
  return {
    meter: new Rpi5PmicMeter({ exec: fakeExec({ vcgencmd: fixtureText('vcgencmd-pmic_read_adc.txt') }), now: clock.now }),
    advance: async (ms) => clock.advance(ms),
    mentions: ['vcgencmd pmic_read_adc', 'under-reads'],
    watts: [2, 3],
  };
});

energyContract('rapl', async () => {
  const clock = fakeClock();
  const root = await tempTree('rapl');
  const file = path.join(root, 'sys/class/powercap/intel-rapl:0/energy_uj');
  let uj = 123_456_789;
  return {
    meter: new RaplMeter({ root, now: clock.now }),
    advance: async (ms) => {
      clock.advance(ms);
      uj += ms * 6000; // 6 W
      await fsp.writeFile(file, `${uj}\n`);
    },
    mentions: ['intel-rapl:0/energy_uj', 'max_energy_range_uj'],
    watts: [5.9, 6.1],
  };
});

energyContract('nvml (nvidia-smi)', async () => {
  const clock = fakeClock();
  return {
    meter: new NvidiaSmiMeter({ exec: fakeExec({ 'nvidia-smi': fixtureText('nvidia-smi-power.csv') }), now: clock.now }),
    advance: async (ms) => clock.advance(ms),
    mentions: ['nvidia-smi', 'power.draw'],
    watts: [35, 36],
  };
});

energyContract('power model', async () => {
  const clock = fakeClock();
  return {
    meter: new PowerModelMeter({ power: { idleWatts: 1.6, busyWatts: 7.2 }, name: 'rpi4', utilisation: () => 0.5, now: clock.now }),
    advance: async (ms) => clock.advance(ms),
    mentions: ['rpi4', '1.6 W idle', '7.2 W busy'],
    watts: [4.4, 4.4],
  };
});
