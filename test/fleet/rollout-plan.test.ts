// The rollout planner without a broker: flags, plans per class, gates, and ticks of the record
// driven by made-up job states (what the driver would read from the broker).
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeRollout } from '../../src/cli/commands/rollout.js';
import { openFleetStore } from '../../src/fleet/store.js';
import type { WindowRow } from '../../src/fleet/fleet-store.js';
import {
  DEFAULT_SPEC,
  advanceRollout,
  cohortStats,
  evaluateGates,
  gatesDue,
  isPermanent,
  newRollout,
  parseCanary,
  parseDuration,
  parseGate,
  parsePercent,
  parseWaves,
  planRollout,
  type BundleInfo,
  type FleetDevice,
  type GateResult,
  type RolloutRecord,
  type RolloutSpec,
  type SeenState,
} from '../../src/fleet/rollout-plan.js';

const sha = (c: string) => c.repeat(64);
const OLD = sha('a');
const NEW = sha('b');
const info = (bundle: string, version: string): BundleInfo => ({ bundle, model: { name: 'm', version }, manifest: { sha256: bundle, bytes: 10 }, signature: { sha256: sha('c'), bytes: 10 } });

function fleet(perClass: Record<string, number>): FleetDevice[] {
  return Object.entries(perClass).flatMap(([cls, n]) => Array.from({ length: n }, (_, i) => ({ device: `${cls}-${String(i).padStart(3, '0')}`, class: cls, bundle: OLD })));
}

function win(p95: number, count = 100, extra: Partial<WindowRow> = {}): WindowRow {
  return { device: 'd', id: 1, bdSeq: 1, seq: 1, windowStart: 0, windowEnd: 1, count, exitHistogram: [count], latencyP50: p95 / 2, latencyP95: p95, latencyP99: p95, joules: count * 0.01, meanWatts: 1, energySource: 'model', droppedWindows: 0, ...extra };
}

describe('rollout flags', () => {
  it('parses canary, waves, percentages, durations and gates, and names the fix when wrong', () => {
    expect(parseCanary('5%')).toEqual({ kind: 'percent', value: 0.05 });
    expect(parseCanary('3')).toEqual({ kind: 'count', value: 3 });
    expect(() => parseCanary('0')).toThrow(/--canary/);
    expect(parseWaves('10%,50%,100%')).toEqual([0.1, 0.5, 1]);
    expect(() => parseWaves('50%,10%,100%')).toThrow(/ascending shares ending at 100%/);
    expect(() => parseWaves('10%,50%')).toThrow(/--waves 10%,50%,100%/);
    expect(parsePercent('12.5%', '--abort-failure-rate')).toBe(0.125);
    expect(() => parsePercent('120%', '--abort-failure-rate')).toThrow(/0% to 100%/);
    expect(parseDuration('10m', '--window')).toBe(600_000);
    expect(parseDuration('1.5s', '--window')).toBe(1500);
    expect(() => parseDuration('10', '--window')).toThrow(/500ms, 30s, 10m, 2h/);
    expect(parseGate('p95<1.1x')).toMatchObject({ metric: 'p95', op: '<', limit: 1.1, unit: 'x' });
    expect(parseGate('accuracy>-0.5pp')).toMatchObject({ metric: 'accuracy', op: '>', limit: -0.5, unit: 'pp' });
    expect(parseGate('exit0>-5pp')).toMatchObject({ metric: 'exit0', unit: 'pp' });
    expect(() => parseGate('latency<1.1')).toThrow(/metric p95, energy, accuracy, errors or exitK/);
  });

  it('tells permanent failures from transient ones', () => {
    expect(isPermanent('rejected', 'incompatible with this device')).toBe(true);
    expect(isPermanent('rolled-back', 'trial: p95 2x')).toBe(true);
    expect(isPermanent('failed', 'self-test: outputs differ from the golden set')).toBe(true);
    expect(isPermanent('failed', 'download: connection lost')).toBe(false);
    expect(isPermanent('timed-out')).toBe(false);
  });
});

describe('planRollout', () => {
  it('gives each class its own canary and cumulative waves, skipping devices already on the target', () => {
    const devices = fleet({ rpi4: 40, jetson: 7 });
    devices[0]!.bundle = NEW;
    const plan = planRollout(devices, NEW, { canary: { kind: 'percent', value: 0.05 }, waves: [0.1, 0.5, 1] });
    const rpi4 = plan.find((c) => c.class === 'rpi4')!;
    expect(rpi4.skipped).toEqual(['rpi4-000']);
    expect(rpi4.steps.map((s) => [s.name, s.devices.length])).toEqual([['canary', 2], ['wave 1', 2], ['wave 2', 16], ['wave 3', 19]]);
    const jetson = plan.find((c) => c.class === 'jetson')!;
    // 5% of 7 rounds up to one canary; 10% of 7 is still 1 device, so wave 1 is empty and left out.
    expect(jetson.steps.map((s) => [s.name, s.devices.length])).toEqual([['canary', 1], ['wave 2', 3], ['wave 3', 3]]);
    const all = plan.flatMap((c) => c.steps.flatMap((s) => s.devices));
    expect(new Set(all).size).toBe(46);
  });
});

describe('gates', () => {
  it('compares the updated cohort with the control and says why', () => {
    const control = cohortStats(new Map([['c1', [win(10)]], ['c2', [win(10)]]]));
    const slow = cohortStats(new Map([['u1', [win(15)]]]));
    const gates = [parseGate('p95<1.1x'), parseGate('energy<1.2x'), parseGate('errors<10pp')];
    const r = evaluateGates(gates, slow, control);
    expect(r.map((g) => g.verdict)).toEqual(['fail', 'pass', 'pass']);
    expect(r[0]!.value).toBeCloseTo(1.5);
    expect(r[0]!.reason).toMatch(/p95 updated 15.000 vs control 10.000: 1.500x, limit <1.1x/);
  });

  it('judges accuracy in points and leaves a gate unknown when a side has no data', () => {
    const control = cohortStats(new Map([['c', [win(10, 100, { accuracy: { correct: 90, labelled: 100 } })]]]));
    const worse = cohortStats(new Map([['u', [win(10, 100, { accuracy: { correct: 89, labelled: 100 } })]]]));
    const [acc] = evaluateGates([parseGate('accuracy>-0.5pp')], worse, control);
    expect(acc!.verdict).toBe('fail');
    expect(acc!.value).toBeCloseTo(-1);
    const silent = cohortStats(new Map([['u', []]]));
    expect(silent.silent).toBe(1);
    expect(evaluateGates([parseGate('p95<1.1x')], silent, control)[0]!.verdict).toBe('unknown');
    expect(evaluateGates([parseGate('errors<50pp')], silent, control)[0]!.verdict).toBe('fail');
  });
});

const SPEC: RolloutSpec = { ...DEFAULT_SPEC, canary: { kind: 'count', value: 1 }, waves: [0.5, 1], gates: [parseGate('p95<1.1x')], windowMs: 1000, stepTimeoutMs: 10_000, maxConcurrent: 100, minDevices: 3, abortFailureRate: 0.2, maxRetries: 2, retryBackoffMs: 100 };

function start(perClass: Record<string, number>, spec: RolloutSpec = SPEC): RolloutRecord {
  const devices = fleet(perClass);
  const plan = planRollout(devices, NEW, spec);
  return newRollout({ id: 'ro-t', fleet: 'f', target: info(NEW, '2'), previous: { [OLD]: info(OLD, '1') }, spec, plan, devices, baselines: {}, now: 0 });
}

/** Simulated fleet: answer every published job (the driver marks them published). */
class Sim {
  states = new Map<string, SeenState>();
  sent: { device: string; job: string; rollback: boolean }[] = [];
  constructor(public r: RolloutRecord, private readonly answer: (device: string, rollback: boolean, attempt: number) => SeenState['state']) {}
  tick(now: number, gates?: Map<string, GateResult[]>, command?: { seq: number; command: 'pause' | 'resume' | 'abort' }) {
    const { record, orders } = advanceRollout(this.r, { now, states: this.states, ...(gates ? { gates } : {}), ...(command ? { command } : {}) });
    for (const o of orders) {
      record.devices[o.device]!.published = true;
      this.sent.push(o);
      const state = this.answer(o.device, o.rollback, record.devices[o.device]!.attempt);
      this.states.set(o.device, { job: o.job, state, active: state === 'succeeded' ? o.bundle.bundle : OLD, ...(state === 'failed' ? { reason: 'download: lost' } : {}) });
    }
    this.r = record;
    return record;
  }
}

const pass = (cls: string[]): Map<string, GateResult[]> => new Map(cls.map((c) => [c, [{ gate: 'p95<1.1x', verdict: 'pass', updated: 1, control: 1, value: 1, reason: 'ok' } satisfies GateResult]]));
const fail: Map<string, GateResult[]> = new Map([['b', [{ gate: 'p95<1.1x', verdict: 'fail', updated: 2, control: 1, value: 2, reason: 'p95 2x' } satisfies GateResult]]]);

describe('advanceRollout', () => {
  it('opens a wave only after the previous step committed and its gates held, per class', () => {
    const sim = new Sim(start({ a: 4, b: 4 }), () => 'succeeded');
    sim.tick(0);
    let r: RolloutRecord;
    expect(sim.sent.map((s) => s.device)).toEqual(['a-000', 'b-000']);
    r = sim.tick(10); // reports read: canaries updated, step done; window not over
    expect(r.devices['a-000']!.phase).toBe('updated');
    expect(gatesDue(r, 500)).toEqual([]);
    expect(gatesDue(r, 1010)).toEqual(['a', 'b']);
    r = sim.tick(1010, pass(['a', 'b']));
    expect(r.classes.a!.current).toBe(1);
    // 4 per class: canary 1, wave 1 up to 50% (1 more), wave 2 the last 2.
    expect(sim.sent.length).toBe(2 + 1 + 1);
    sim.tick(1020);
    sim.tick(2020, pass(['a', 'b']));
    sim.tick(2030);
    r = sim.tick(3030, pass(['a', 'b']));
    expect(r.status).toBe('completed');
    expect(r.touched).toBe(8);
  });

  it('aborts a class whose gate breaks and rolls its updated devices back; the other class completes', () => {
    const sim = new Sim(start({ a: 4, b: 4 }), () => 'succeeded');
    sim.tick(0);
    sim.tick(10);
    let r = sim.tick(1010, new Map<string, GateResult[]>([...pass(['a']), ...fail]));
    expect(r.classes.b!.status).toBe('aborted');
    expect(r.classes.b!.reason).toMatch(/gate breach after the canary: p95<1.1x \(p95 2x\)/);
    expect(r.devices['b-000']!.phase).toBe('rolling-back');
    expect(r.devices['b-003']!.phase).toBe('skipped');
    expect(sim.sent.filter((s) => s.rollback).map((s) => s.device)).toEqual(['b-000']);
    for (let t = 1020; r.status === 'running'; t += 1000) r = sim.tick(t, gatesDue(r, t).length ? pass(['a']) : undefined);
    expect(r.status).toBe('partial');
    expect(r.devices['b-000']!.phase).toBe('rolled-back');
    expect(Object.entries(r.devices).filter(([, d]) => d.class === 'a').every(([, d]) => d.phase === 'updated')).toBe(true);
  });

  it('retries transient failures with backoff and fails permanent ones at once', () => {
    const sim = new Sim(start({ a: 2 }), (device, _rb, attempt) => (device === 'a-000' ? (attempt < 2 ? 'failed' : 'succeeded') : 'rejected'));
    sim.tick(0);
    let r = sim.tick(10);
    expect(r.devices['a-000']!).toMatchObject({ phase: 'updating', published: false, nextTryAt: 110 });
    sim.tick(50);
    expect(sim.sent.length).toBe(1);
    sim.tick(110);
    expect(sim.sent.map((s) => s.job)).toEqual(['ro-t-u1', 'ro-t-u2']);
    r = sim.tick(120);
    expect(r.devices['a-000']!.phase).toBe('updated');
    sim.tick(1120, pass(['a']));
    r = sim.tick(1130);
    expect(r.devices['a-001']!).toMatchObject({ phase: 'failed', state: 'rejected', attempt: 1 });
  });

  it('aborts on the failure rate once enough devices finished', () => {
    const sim = new Sim(start({ a: 10 }, { ...SPEC, canary: { kind: 'count', value: 4 } }), (device) => (device === 'a-001' ? 'rejected' : 'succeeded'));
    sim.tick(0);
    const r = sim.tick(10);
    expect(r.classes.a!.status).toBe('aborted');
    expect(r.classes.a!.reason).toMatch(/failure rate 1\/4 over 20%/);
    expect(Object.values(r.devices).filter((d) => d.phase === 'rolling-back').length).toBe(3);
  });

  it('times out a silent device, and pauses, resumes and aborts on operator commands', () => {
    const sim = new Sim(start({ a: 4 }), () => 'in-progress');
    sim.tick(0);
    let r = sim.tick(10_001);
    expect(r.devices['a-000']!).toMatchObject({ state: 'timed-out', published: false });
    r = sim.tick(10_002, undefined, { seq: 1, command: 'pause' });
    expect(r.status).toBe('paused');
    sim.tick(20_000, undefined, { seq: 1, command: 'pause' });
    expect(sim.sent.length).toBe(1);
    sim.tick(20_001, undefined, { seq: 2, command: 'resume' });
    expect(sim.sent.length).toBe(2);
    r = sim.tick(20_002, undefined, { seq: 3, command: 'abort' });
    expect(r.classes.a!.reason).toBe('aborted by the operator');
    expect(sim.sent.at(-1)).toMatchObject({ device: 'a-000', rollback: true });
  });
});

describe('rollout record in the SQLite fleet store', () => {
  it('saves and reads the record; a command is numbered and kept across the driver saving the record', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-rollout-store-'));
    const store = openFleetStore(path.join(dir, 'fleet.db'));
    try {
      const r = start({ a: 3 });
      await store.saveRollout(r);
      expect(await store.commandRollout('ro-nope', 'pause')).toBeNull();
      expect(await store.commandRollout(r.id, 'pause')).toBe(1);
      // The driver saves the record it read before the command: the command survives.
      await store.saveRollout({ ...r, updatedAt: 5 });
      const got = (await store.rollout(r.id))!;
      expect(got.command).toEqual({ seq: 1, command: 'pause' });
      expect(got.record).toEqual({ ...r, updatedAt: 5 });
      expect(await store.commandRollout(r.id, 'resume')).toBe(2);
      await store.saveRollout({ ...r, id: 'ro-later', createdAt: 10 });
      expect((await store.rollouts()).map((x) => x.id)).toEqual(['ro-later', 'ro-t']);
      expect(await store.rollout('ro-nope')).toBeNull();
    } finally {
      await store.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rollout status text', () => {
  it('shows each class step with its counts and gate reasons, and each device with its phase and reason', () => {
    const sim = new Sim(start({ a: 2, b: 2 }), () => 'succeeded');
    sim.tick(0);
    sim.tick(10);
    const r = sim.tick(1010, new Map<string, GateResult[]>([...pass(['a']), ...fail]));
    const text = describeRollout(r);
    expect(text).toMatch(/^rollout ro-t +fleet f +m 2 \(bbbbbbbbbbbb\) +running/);
    expect(text).toMatch(/b +canary +aborted +1 +0 +0 +0 +1 +fail p95 2x/);
    expect(text).toMatch(/b +aborted .*gate breach after the canary: p95<1.1x \(p95 2x\)/);
    expect(text).toMatch(/b-000 +b +canary +rolling-back .*rolling back: gate breach/);
    expect(text).toMatch(/b-001 +b +wave 2 +skipped .*not sent: class aborted/);
  });
});

describe('gates that cannot be judged', () => {
  const unknown = (updated: number | null): Map<string, GateResult[]> => new Map([['a', [{ gate: 'p95<1.1x', verdict: 'unknown', updated, control: updated === null ? 1 : null, value: null, reason: 'p95: no data' }]]]);

  it('waits for them up to the step timeout, then aborts when the updated devices sent nothing', () => {
    const sim = new Sim(start({ a: 4 }), () => 'succeeded');
    sim.tick(0);
    sim.tick(10);
    let r = sim.tick(1010, unknown(null));
    expect(r.classes.a!).toMatchObject({ status: 'running', current: 0 });
    r = sim.tick(11_011, unknown(null));
    expect(r.classes.a!.status).toBe('aborted');
    expect(r.classes.a!.reason).toMatch(/no telemetry from the updated devices of the canary/);
  });

  it('goes on after the step timeout when only the control has no data', () => {
    const sim = new Sim(start({ a: 4 }), () => 'succeeded');
    sim.tick(0);
    sim.tick(10);
    const r = sim.tick(11_011, unknown(1));
    expect(r.classes.a!).toMatchObject({ status: 'running', current: 1 });
  });
});

describe('limits', () => {
  it('keeps at most maxConcurrent jobs out', () => {
    const sim = new Sim(start({ a: 10 }, { ...SPEC, canary: { kind: 'count', value: 6 }, maxConcurrent: 4 }), () => 'in-progress');
    sim.tick(0);
    expect(sim.sent.length).toBe(4);
    sim.states.set('a-000', { job: 'ro-t-u1', state: 'succeeded', active: NEW });
    sim.tick(10);
    expect(sim.sent.map((s) => s.device)).toEqual(['a-000', 'a-001', 'a-002', 'a-003', 'a-004']);
  });

  it('aborts everything past the overall timeout', () => {
    const sim = new Sim(start({ a: 4, b: 4 }, { ...SPEC, overallTimeoutMs: 5000 }), () => 'succeeded');
    sim.tick(0);
    sim.tick(10);
    const r = sim.tick(5001);
    expect(Object.values(r.classes).map((c) => c.reason)).toEqual(['overall timeout 5000 ms passed', 'overall timeout 5000 ms passed']);
    expect(sim.sent.filter((s) => s.rollback).map((s) => s.device)).toEqual(['a-000', 'b-000']);
  });
});
