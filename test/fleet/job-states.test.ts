// JobStates.take sees every message the collector receives: it must claim exactly the job topics
// (job/state and job/desired) and leave telemetry, including a device whose id is `job`, to ingest.
import { describe, expect, it } from 'vitest';
import { JobStates } from '../../src/fleet/job-states.js';
import { topicFor } from '../../src/telemetry/index.js';

const msg = (topic: string, payload = '{}') => ({ topic, payload: Buffer.from(payload), retain: false });

describe('JobStates.take', () => {
  it('claims job topics and nothing else', () => {
    const jobs = new JobStates();
    expect(jobs.take(msg(topicFor('lab', 'pi-1', 'metrics')))).toBe(false);
    expect(jobs.take(msg(topicFor('lab', 'job', 'metrics')))).toBe(false);
    expect(jobs.take(msg(topicFor('job', 'job', 'birth')))).toBe(false);
    expect(jobs.take(msg('edgeexit/v1/lab/pi-1/ack'))).toBe(false);
    expect(jobs.take(msg('other/job/state'))).toBe(false);
    expect(jobs.take(msg(topicFor('lab', 'pi-1', 'job/desired')))).toBe(true);
    // Not a valid state: claimed (not telemetry) but not kept.
    expect(jobs.take(msg(topicFor('lab', 'pi-1', 'job/state'), '{"nope":1}'))).toBe(true);
    expect(jobs.all()).toEqual([]);
  });
});
