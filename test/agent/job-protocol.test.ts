// The signed job message: a job signed by a trusted operator key passes; one signed by a key the
// device does not trust, a revoked key, a body changed after signing, a job addressed to another
// device, an oversized or malformed payload are each refused with a reason naming the fix.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkSignedJob, decodeJobState, signJob, type Job } from '../../src/agent/job-protocol.js';
import { generateKeyPair, loadPrivateKey } from '../../src/bundle/signing.js';
import { loadTrustStore, revokeKey } from '../../src/bundle/trust.js';
import { scratch } from '../compiler/helpers.js';
import { trustedSigner } from '../runtime/helpers.js';

const job: Job = {
  v: 1,
  job: 'j-1',
  fleet: 'lab',
  device: 'pi-07',
  bundle: 'a'.repeat(64),
  model: { name: 'zoo', version: '1.0.0' },
  rollback: false,
  canceled: false,
  issuedAt: '2026-12-06T00:00:00.000Z',
  manifest: { sha256: 'b'.repeat(64), bytes: 1000 },
  signature: { sha256: 'c'.repeat(64), bytes: 200 },
};
const me = { fleet: 'lab', device: 'pi-07' };
const bytes = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

describe('signed jobs', () => {
  it('accepts a job signed by a trusted key and refuses every forgery with its reason', async () => {
    const dir = await scratch('job-protocol');
    const signer = await trustedSigner(dir);
    const key = await loadPrivateKey(signer.privateKey);
    const trust = await loadTrustStore(signer.trustDir);
    const signed = signJob(job, key);
    expect(checkSignedJob(bytes(signed), trust, me)).toEqual({ ok: true, job });

    const stranger = await generateKeyPair(path.join(dir, 'stranger'));
    const foreign = checkSignedJob(bytes(signJob(job, await loadPrivateKey(stranger.privateKey))), trust, me);
    expect(foreign).toMatchObject({ ok: false, job: 'j-1' });
    expect(!foreign.ok && foreign.reason).toMatch(/does not trust .*edgeexit trust add/);

    const tampered = checkSignedJob(bytes({ ...signed, body: signed.body.replace('"rollback":false', '"rollback":true') }), trust, me);
    expect(!tampered.ok && tampered.reason).toMatch(/signature does not match its body/);

    const other = checkSignedJob(bytes(signJob({ ...job, device: 'pi-08' }, key)), trust, me);
    expect(!other.ok && other.reason).toMatch(/for lab\/pi-08, this device is lab\/pi-07/);

    expect(checkSignedJob(Buffer.alloc(20_000, 32), trust, me)).toMatchObject({ ok: false, reason: expect.stringMatching(/20000 bytes, expected at most 16384/) });
    expect(checkSignedJob(bytes({ body: '{}', keyId: 'x', sig: 'y' }), trust, me)).toMatchObject({ ok: false, reason: expect.stringMatching(/keyId/) });

    await revokeKey(signer.trustDir, signed.keyId, 'lost laptop');
    const revoked = checkSignedJob(bytes(signed), await loadTrustStore(signer.trustDir), me);
    expect(!revoked.ok && revoked.reason).toMatch(/revoked key/);
  });

  it('refuses job states with unbounded fields', () => {
    const ok = { v: 1, job: 'j-1', state: 'failed', step: 'self-test', progress: 0.5, reason: 'x', bundle: null, active: null, previous: [], attempts: 1, at: '2026-12-06T00:00:00Z' };
    expect(decodeJobState(bytes(ok))).toEqual(ok);
    expect(decodeJobState(bytes({ ...ok, reason: 'x'.repeat(3000) }))).toBeUndefined();
    expect(decodeJobState(bytes({ ...ok, progress: 2 }))).toBeUndefined();
    expect(decodeJobState(bytes({ ...ok, state: 'exploded' }))).toBeUndefined();
    expect(decodeJobState(bytes({ ...ok, previous: Array(17).fill('a'.repeat(64)) }))).toBeUndefined();
  });
});
