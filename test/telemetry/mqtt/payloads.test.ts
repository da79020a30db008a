import { describe, expect, it } from 'vitest';
import {
  MAX_PAYLOAD_BYTES,
  PayloadTooLargeError,
  decodeAck,
  decodePayload,
  encodePayload,
  parseTopic,
  subscriptionFor,
  topicFor,
  validatePayload,
  type MetricsWindow,
} from '../../../src/telemetry/index.js';
import { InputError, ValidationError } from '../../../src/util/errors.js';
import { BIRTH_INFO, windowBody } from './fixtures.js';

const metrics = (): MetricsWindow => ({ id: 7, bdSeq: 2, seq: 3, ...windowBody(0) });

describe('telemetry payload schema', () => {
  it('round-trips every kind', () => {
    const birth = { device: 'dev-1', fleet: 'lab', bdSeq: 0, seq: 0, ...BIRTH_INFO, at: 1 };
    expect(decodePayload('birth', encodePayload('birth', birth))).toEqual(birth);
    expect(decodePayload('death', encodePayload('death', { device: 'dev-1', bdSeq: 4, clean: false }))).toEqual({ device: 'dev-1', bdSeq: 4, clean: false });
    expect(decodePayload('metrics', encodePayload('metrics', metrics()))).toEqual(metrics());
  });

  it('takes seq beyond 255 (it no longer wraps), and reads acks on the ack topic', () => {
    expect(validatePayload('metrics', { ...metrics(), seq: 70_000 }).seq).toBe(70_000);
    expect(parseTopic('edgeexit/v1/lab/pi-07/ack')).toEqual({ fleet: 'lab', device: 'pi-07', kind: 'ack' });
    expect(topicFor('lab', 'pi-07', 'ack')).toBe('edgeexit/v1/lab/pi-07/ack');
    expect(decodeAck(Buffer.from('{"ids":[1,2]}'))).toEqual({ ids: [1, 2] });
    for (const bad of ['{"ids":[]}', '{"ids":[-1]}', '{"ids":[1],"x":1}', 'nope']) expect(decodeAck(Buffer.from(bad)), bad).toBeUndefined();
  });

  it('names the failing field, what it expected and what came', () => {
    const bad = { ...metrics(), energy: { ...metrics().energy, source: 'guess' }, seq: -1 };
    let err: unknown;
    try {
      validatePayload('metrics', bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    const problems = (err as ValidationError).problems;
    expect(problems.map((p) => p.where)).toEqual(expect.arrayContaining(['metrics: energy.source', 'metrics: seq']));
    const source = problems.find((p) => p.where.endsWith('energy.source'))!;
    expect(source.got).toBe('"guess"');
    expect(source.expected).toMatch(/sensor/);
    expect((err as Error).message).toMatch(/energy\.source/);
  });

  it('checks cross-field rules and unknown fields', () => {
    expect(() => validatePayload('metrics', { ...metrics(), count: 11 })).toThrow(/exitHistogram.*summing to count \(11\)/s);
    expect(() => validatePayload('metrics', { ...metrics(), windowEnd: 0 })).toThrow(/windowEnd/);
    expect(() => validatePayload('death', { device: 'd', bdSeq: 1, clean: true, extra: 1 })).toThrow(/extra/);
    expect(() => validatePayload('birth', { device: 'dev/1' })).toThrow(/device/);
  });

  it('refuses oversized payloads and non-JSON', () => {
    const big = { ...metrics(), latencyMs: { endToEnd: { p50: 1, p95: 1, p99: 1 }, stages: Array.from({ length: 3000 }, () => ({ p50: 1.25, p95: 2.5, p99: 3.75 })) } };
    expect(() => encodePayload('metrics', big)).toThrow(PayloadTooLargeError);
    expect(() => encodePayload('metrics', big)).toThrow(new RegExp(`${MAX_PAYLOAD_BYTES}-byte limit`));
    expect(() => decodePayload('death', '{nope')).toThrow(InputError);
  });
});

describe('telemetry topics', () => {
  it('builds and parses edgeexit/v1/<fleet>/<device>/<kind>', () => {
    expect(topicFor('lab', 'dev-1', 'metrics')).toBe('edgeexit/v1/lab/dev-1/metrics');
    expect(parseTopic('edgeexit/v1/lab/dev-1/birth')).toEqual({ fleet: 'lab', device: 'dev-1', kind: 'birth' });
    expect(parseTopic('edgeexit/v1/lab/dev-1/job/42/status')).toEqual({ fleet: 'lab', device: 'dev-1', kind: 'job/42/status' });
    expect(parseTopic('edgeexit/v2/lab/dev-1/birth')).toBeUndefined();
    expect(parseTopic('edgeexit/v1/lab/dev-1/other')).toBeUndefined();
    expect(subscriptionFor()).toBe('edgeexit/v1/+/+/#');
    expect(subscriptionFor('lab')).toBe('edgeexit/v1/lab/+/#');
  });

  it('rejects ids that would break the topic', () => {
    for (const bad of ['a+b', 'a#', 'a/b', '', '$SYS', 'x y']) expect(() => topicFor('lab', bad, 'birth')).toThrow(InputError);
    expect(() => topicFor('fl+', 'dev', 'birth')).toThrow(/fleet id/);
    expect(() => subscriptionFor('#')).toThrow(InputError);
  });
});
