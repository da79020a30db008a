// Every committed profile must load, pass the schema and keep its numbers sourced; the registry
// tables the schema draws its enumerations from must stay self-consistent.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  EXECUTION_PROVIDERS,
  QUANT_SCHEMES,
  devicesDir,
  fallbackChain,
  listDeviceProfiles,
  loadDeviceProfile,
  ortNodeAvailability,
  schemeFits,
  type ExecutionProviderKey,
} from '../../src/devices/index.js';

const EXPECTED_IDS = ['jetson-nano', 'jetson-orin-nano', 'rpi4', 'rpi5', 'x86-host'];

describe('committed device profiles', () => {
  it('lists the shipped profiles and not the schema file', async () => {
    expect(await listDeviceProfiles()).toEqual(EXPECTED_IDS);
  });

  it.each(EXPECTED_IDS)('%s validates, points at the schema and fills defaults', async (id) => {
    const profile = await loadDeviceProfile(id);
    expect(profile.id).toBe(id);
    expect(profile.threads).toBeGreaterThanOrEqual(1);
    expect(profile.threads).toBeLessThanOrEqual(profile.cpu.cores);
    expect(profile.costModel.threads).toBeGreaterThanOrEqual(1);
    expect(profile.costModel.perPrecision[profile.precision.default]).toBeDefined();
    const raw = JSON.parse(readFileSync(path.join(devicesDir(), `${id}.json`), 'utf8')) as Record<string, unknown>;
    expect(raw.$schema).toBe('./device-profile.schema.json');
  });

  it('loads by path as well as by id', async () => {
    const byPath = await loadDeviceProfile(path.join(devicesDir(), 'rpi5.json'));
    expect(byPath.cpu.model).toBe('Cortex-A76');
  });

  it('records the facts the brief pins down', async () => {
    const rpi4 = await loadDeviceProfile('rpi4');
    expect(rpi4.cpu.isa.neonDotProd).toBe(false);
    expect(rpi4.energySensor.kind).toBe('none');
    const rpi5 = await loadDeviceProfile('rpi5');
    expect(rpi5.cpu.isa.neonDotProd).toBe(true);
    expect(rpi5.energySensor.kind).toBe('rpi5-pmic');
    expect(rpi5.sources.find((s) => s.field === 'energySensor')?.note).toMatch(/under-read/);
    const nano = await loadDeviceProfile('jetson-nano');
    expect(nano.executionProviders).toEqual(['tensorrt', 'cuda', 'cpu']);
    expect(nano.precision.default).toBe('fp16');
    expect(nano.gpu?.computeCapability).toBe('5.3');
    expect(nano.energySensor).toMatchObject({ kind: 'ina3221-iio', device: '/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0' });
    const orin = await loadDeviceProfile('jetson-orin-nano');
    expect(orin.gpu).toMatchObject({ cudaCores: 1024, tensorCores: 32, computeCapability: '8.7' });
    expect(orin.precision.quantScheme).toBe('symmetric-s8-qdq');
    expect(orin.energySensor).toMatchObject({ kind: 'ina3221-hwmon', inputRail: 'VDD_IN' });
  });

  it('says "estimate" and how to calibrate wherever a board cost is not measured', async () => {
    for (const id of EXPECTED_IDS.filter((x) => x !== 'x86-host')) {
      const profile = await loadDeviceProfile(id);
      const costSources = profile.sources.filter((s) => s.field.startsWith('costModel.perPrecision'));
      expect(costSources.map((s) => s.field.split('.')[2]).sort(), id).toEqual(Object.keys(profile.costModel.perPrecision).sort());
      for (const s of costSources) expect(s.note, `${id} ${s.field}`).toMatch(/estimate[\s\S]*calibrate with `edgeexit profile` on the board/i);
    }
  });
});

describe('registry', () => {
  it('ends every fallback chain at cpu', () => {
    for (const key of Object.keys(EXECUTION_PROVIDERS) as ExecutionProviderKey[]) expect(fallbackChain(key).at(-1)).toBe('cpu');
    expect(fallbackChain('tensorrt')).toEqual(['tensorrt', 'cuda', 'cpu']);
  });

  it('ships cpu everywhere and CUDA/TensorRT only on linux-x64 by download', () => {
    for (const v of Object.values(EXECUTION_PROVIDERS.cpu.onnxruntimeNode)) expect(v).toBe('bundled');
    expect(EXECUTION_PROVIDERS.cuda.onnxruntimeNode['linux-x64']).toBe('cuda-download');
    expect(EXECUTION_PROVIDERS.tensorrt.onnxruntimeNode['linux-arm64']).toBe('source-build');
    expect(Object.values(EXECUTION_PROVIDERS.xnnpack.onnxruntimeNode).every((v) => v === 'none')).toBe(true);
    expect(ortNodeAvailability('webgpu', 'linux-arm64')).toBe('none');
    expect(ortNodeAvailability('cpu', 'freebsd-x64')).toBe('none');
  });

  it('matches quantisation schemes to hardware', () => {
    expect(QUANT_SCHEMES['symmetric-s8-qdq'].zeroPointsZero).toBe(true);
    expect(schemeFits('s8s8-qdq', ['cpu'], 'arm64', { vnni: false })).toBe(true);
    expect(schemeFits('u8s8-qdq', ['cpu'], 'x64', { vnni: false })).toBe(false);
    expect(schemeFits('u8s8-reduce-range-qdq', ['cpu'], 'x64', { vnni: false })).toBe(true);
    expect(schemeFits('u8s8-qdq', ['cpu'], 'arm64', { vnni: false })).toBe(false);
    expect(schemeFits('symmetric-s8-qdq', ['cpu'], 'x64', {})).toBe(false);
    expect(schemeFits('symmetric-s8-qdq', ['tensorrt', 'cpu'], 'arm64', {})).toBe(true);
  });
});
