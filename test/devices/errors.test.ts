// What a user sees when a profile is wrong: one error carrying every problem, each with the
// file and JSON path, what was expected, what came instead and a fix.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InputError, ValidationError } from '../../src/util/errors.js';
import { EXECUTION_PROVIDERS, devicesDir, findPackageRoot, loadDeviceProfile, parseDeviceProfile, validateDeviceProfile } from '../../src/devices/index.js';

function rpi4(): Record<string, any> {
  return JSON.parse(readFileSync(path.join(devicesDir(), 'rpi4.json'), 'utf8'));
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

describe('a profile with three wrong fields', () => {
  const bad = rpi4();
  bad.cpu.cores = 'four';
  bad.executionProviders = ['tpu'];
  bad.power.busyWatts = -1;
  const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json'));

  it('throws one ValidationError with all three problems', () => {
    expect(err).toBeInstanceOf(ValidationError);
    const v = err as ValidationError;
    expect(v.exitCode).toBe(2);
    expect(v.problems.map((p) => p.where).sort()).toEqual([
      'devices/rpi4.json: cpu.cores',
      'devices/rpi4.json: executionProviders[0]',
      'devices/rpi4.json: power.busyWatts',
    ]);
  });

  it('names the file, each path, what was expected and what came', () => {
    const msg = (err as Error).message;
    expect(msg).toMatch(/^devices\/rpi4\.json: 3 problems/);
    expect(msg).toContain('devices/rpi4.json: cpu.cores: expected an integer, got "four" (a string)');
    expect(msg).toContain('devices/rpi4.json: executionProviders[0]: expected one of: ');
    expect(msg).toContain('got "tpu"');
    expect(msg).toContain('devices/rpi4.json: power.busyWatts: expected a number >= 0, got -1');
  });

  it('lists every valid execution provider and gives a fix', () => {
    const p = (err as ValidationError).problems.find((x) => x.where.endsWith('executionProviders[0]'))!;
    for (const ep of Object.keys(EXECUTION_PROVIDERS)) expect(p.expected).toContain(ep);
    expect(p.fix).toBeTruthy();
  });
});

describe('cross-field rules', () => {
  it('busyWatts below idleWatts is a problem', () => {
    const bad = rpi4();
    bad.power.busyWatts = 1;
    const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json')) as ValidationError;
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toMatchObject({ where: 'devices/rpi4.json: power.busyWatts', got: '1' });
    expect(err.problems[0]!.expected).toContain('>= idleWatts (1.6)');
  });

  it('id must equal the file name', () => {
    const err = catchError(() => validateDeviceProfile(rpi4(), 'devices/rpi-4.json')) as ValidationError;
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.problems).toEqual([expect.objectContaining({ where: 'devices/rpi-4.json: id', expected: '"rpi-4" (the file name without .json)', got: '"rpi4"' })]);
    expect(err.message).toContain('rename the file');
  });

  it('lists the sections and numbers that have no source', () => {
    const bad = rpi4();
    const dropped = ['power', 'energySensor', 'costModel', 'costModel.perPrecision.int8'];
    bad.sources = bad.sources.filter((s: { field: string }) => !dropped.includes(s.field));
    const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json')) as ValidationError;
    expect(err.problems).toHaveLength(1);
    const p = err.problems[0]!;
    expect(p.where).toBe('devices/rpi4.json: sources');
    const listed = p.expected!.replace('a source (field, cite, note) covering ', '').split(', ');
    // Whole sections without any source are named once; costModel keeps other sources, so only
    // its uncited numbers are listed, one by one.
    expect(listed.sort()).toEqual(
      ['power', 'energySensor', 'costModel.threads', ...['convNsPerMac', 'gemmNsPerMac', 'depthwiseNsPerMac', 'elementwiseNsPerElement'].map((k) => `costModel.perPrecision.int8.${k}`)].sort(),
    );
    expect(err.message).toContain('devices/rpi4.json: sources: expected a source (field, cite, note) covering ');
  });

  it('rejects a source that names no field', () => {
    const bad = rpi4();
    bad.sources.push({ field: 'power.busyWats', cite: 'x' });
    const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json')) as ValidationError;
    expect(err.problems.map((p) => p.where)).toEqual([`devices/rpi4.json: sources[${bad.sources.length - 1}].field`]);
  });

  it('rejects a quantisation scheme that does not suit the CPU', () => {
    const bad = rpi4();
    bad.precision.quantScheme = 'u8s8-qdq';
    const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json')) as ValidationError;
    expect(err.problems).toEqual([expect.objectContaining({ where: 'devices/rpi4.json: precision.quantScheme', got: '"u8s8-qdq"' })]);
    expect(err.problems[0]!.fix).toContain('s8s8-qdq');
  });

  it('flags x86 ISA flags on an Arm CPU, an unknown field and an unknown sensor kind together', () => {
    const bad = rpi4();
    bad.cpu.isa.avx2 = true;
    bad.cpu.coress = 4;
    bad.energySensor = { kind: 'ina219' };
    const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json')) as ValidationError;
    const byWhere = Object.fromEntries(err.problems.map((p) => [p.where.replace('devices/rpi4.json: ', ''), p]));
    expect(Object.keys(byWhere).sort()).toEqual(['cpu.coress', 'cpu.isa.avx2', 'energySensor.kind']);
    expect(byWhere['cpu.coress']!.fix).toBe('did you mean "cores"?');
    expect(byWhere['energySensor.kind']!.expected).toContain('rpi5-pmic');
  });

  it('requires costs for the default precision and a listed provider for the cost model', () => {
    const bad = rpi4();
    delete bad.costModel.perPrecision.int8;
    bad.sources = bad.sources.filter((s: { field: string }) => s.field !== 'costModel.perPrecision.int8');
    bad.costModel.executionProvider = 'cuda';
    const err = catchError(() => validateDeviceProfile(bad, 'devices/rpi4.json')) as ValidationError;
    expect(err.problems.map((p) => p.where).sort()).toEqual(['devices/rpi4.json: costModel.executionProvider', 'devices/rpi4.json: costModel.perPrecision.int8']);
  });
});

describe('loading', () => {
  it('an unknown id is an InputError listing the known ids', async () => {
    const err = await loadDeviceProfile('rpi3').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err).not.toBeInstanceOf(ValidationError);
    const msg = (err as Error).message;
    for (const id of ['jetson-nano', 'jetson-orin-nano', 'rpi4', 'rpi5', 'x86-host']) expect(msg).toContain(id);
    expect((err as InputError).problems[0]!.fix).toMatch(/did you mean "rpi[45]"\?/);
  });

  it('invalid JSON is an InputError naming the file, line and column', () => {
    const text = '{\n  "id": "x",\n  "name" "y"\n}\n';
    const err = catchError(() => parseDeviceProfile(text, 'devices/x.json'));
    expect(err).toBeInstanceOf(InputError);
    expect(err).not.toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(/^devices\/x\.json:3:10: invalid JSON/);
  });

  it('truncated JSON points at its end', () => {
    const err = catchError(() => parseDeviceProfile('{\n  "id": "x",', 'b.json'));
    expect((err as Error).message).toMatch(/^b\.json:2:13: invalid JSON/);
  });

  it('reads a profile file outside the package by path', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-devices-'));
    const file = path.join(dir, 'my-board.json');
    writeFileSync(file, JSON.stringify({ ...rpi4(), id: 'my-board' }));
    expect((await loadDeviceProfile(file)).id).toBe('my-board');
    writeFileSync(file, '{ "id": "my-board", }');
    const err = await loadDeviceProfile(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toContain('my-board.json:1:21: invalid JSON');
  });

  it('a missing file is an InputError', async () => {
    const err = await loadDeviceProfile('./no/such/profile.json').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toContain('ENOENT');
  });

  it('finds the package root from a dist/ layout too', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-root-'));
    writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'edgeexit' }));
    mkdirSync(path.join(root, 'dist', 'devices'), { recursive: true });
    mkdirSync(path.join(root, 'dist', 'src', 'devices'), { recursive: true });
    expect(findPackageRoot(path.join(root, 'dist', 'devices'))).toBe(root);
    expect(findPackageRoot(path.join(root, 'dist', 'src', 'devices'))).toBe(root);
  });
});
