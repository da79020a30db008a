// Disk full while staging, on a real filesystem: a 6 MB tmpfs in a private mount namespace holds
// a device store with one committed bundle. An install and a download of a bundle larger than the
// free space are refused before anything is staged; an install and a download that pass that
// check but meet a disk another file has filled meanwhile are refused on ENOSPC. Each time the
// reason names the folder, the bytes needed and free and the fix, staging is gone, and the running
// bundle and the journal are as they were (the ENOSPC install adds its own started/failed lines).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { installBundle } from '../../src/agent/index.js';
import { startFileServer, type FileServer } from '../../src/fleet/file-server.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { scratch } from '../runtime/helpers.js';
import type { ChildInput, Outcome } from './disk-full-child.js';
import { compileFixture, variant, type Fixture } from './helpers.js';
import { refsOf } from './transfer-fixtures.js';
import { UNSHARE_TMPFS, runOnTmpfs } from './tmpfs.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const TMPFS = '6m';

/** `src` with a random `filler.bin` of `bytes` listed in its manifest and a higher version, signed again. */
function padded(fx: Fixture, out: string, bytes: number, version: string): Promise<string> {
  return variant(fx.bundle, out, fx.privateKey, (m, files) => {
    files.set('filler.bin', new Uint8Array(randomBytes(bytes)));
    return { ...m, model: { ...m.model, version }, files: [...m.files, { file: 'filler.bin', sha256: '0'.repeat(64), bytes: 0 }] };
  });
}

UNSHARE_TMPFS.describe('disk full while staging (tmpfs in a private mount namespace)', () => {
  MOSQUITTO.describe('through a real Mosquitto', () => {
    let fx: Fixture;
    let broker: Broker;
    let server: FileServer;
    let mount: string;
    let r: { mountFree: number; installRefused: Outcome; installEnospc: Outcome; downloadRefused: Outcome; downloadEnospc: Outcome; downloadAfter: Outcome };
    let stderr = '';

    beforeAll(async () => {
      fx = await compileFixture(await scratch('disk-full'));
      const store = path.join(fx.dir, 'store');
      const first = await installBundle({ root: store, bundle: fx.bundle, trustDir: fx.trustDir });
      expect(first.state, first.reason).toBe('committed');
      // 8 MB cannot fit a 6 MB disk; 2 MB fits beside the committed bundle with the margin.
      const big = await padded(fx, path.join(fx.dir, 'big'), 8_000_000, '2.0.0');
      const mid = await padded(fx, path.join(fx.dir, 'mid'), 2_000_000, '2.0.1');
      broker = await startBroker({ config: ['set_tcp_nodelay true'] });
      server = await startFileServer({ brokerUrl: broker.url, bundles: [big, mid] });
      mount = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-tmpfs-'));
      const refs = async (dir: string) => {
        const x = await refsOf(dir);
        return { dir, manifest: x.manifest, signature: x.signature };
      };
      const input: ChildInput = { mount, store, trustDir: fx.trustDir, big: await refs(big), mid: await refs(mid), brokerUrl: broker.url };
      const out = await runOnTmpfs(mount, TMPFS, path.join(here, 'disk-full-child.ts'), [JSON.stringify(input)]);
      stderr = out.stderr;
      expect(out.code, out.stderr).toBe(0);
      r = JSON.parse(out.stdout.trim().split('\n').at(-1)!);
    }, 180_000);
    afterAll(async () => {
      await server?.close().catch(() => undefined);
      await broker?.dispose();
      if (mount) await fsp.rm(mount, { recursive: true, force: true });
      if (fx) await fsp.rm(fx.dir, { recursive: true, force: true });
    });

    /** The running bundle and the store as they were; staging gone. */
    const untouched = (o: Outcome) => {
      expect(o.threw, stderr).toBeUndefined();
      expect(o.currentAfter).toBe(o.currentBefore);
      expect(o.currentBefore).not.toBeNull();
      expect(o.currentVerified).toBe(true);
      // Only the running bundle's folder: no half-written temp folder left taking the space.
      expect(o.bundles).toEqual([o.currentBefore]);
      expect(o.rootEntries.filter((e) => e.includes('.tmp'))).toEqual([]);
      expect(o.stagingExists).toBe(false);
    };
    const names = (o: Outcome, folder: RegExp) => {
      expect(o.reason).toMatch(folder);
      expect(o.reason).toMatch(/needs \d+ bytes \([\d.]+ MB\).* \d+ bytes \([\d.]+ MB\) free/);
      expect(o.reason).toMatch(/fix: free space on that filesystem .*--root or EDGEEXIT_STORE/);
    };

    it('the tmpfs is the small disk the cases assume', () => {
      expect(r.mountFree).toBeLessThanOrEqual(6 * 1024 * 1024);
      expect(r.mountFree).toBeGreaterThan(4 * 1024 * 1024);
    });

    it('an install larger than the free space is refused before the journal is written', () => {
      const o = r.installRefused;
      expect(o.state).toBe('failed');
      names(o, new RegExp(`^${mount}/store/bundles: not enough free space to stage bundle [0-9a-f]{12}`));
      untouched(o);
      expect(o.journalAfter).toBe(o.journalBefore);
      expect(o.filled).toBe(false);
    });

    it('an install that meets a full disk mid-write fails with the reason and leaves the running bundle', () => {
      const o = r.installEnospc;
      expect(o.filled).toBe(true);
      expect(o.state).toBe('failed');
      names(o, new RegExp(`^${mount}/store/bundles: the disk filled up while staging bundle [0-9a-f]{12} \\(ENOSPC\\)`));
      untouched(o);
      // Earlier lines kept byte for byte; this job's lines added and readable.
      expect(o.journalAfter.startsWith(o.journalBefore)).toBe(true);
      expect(o.journalStates.slice(-2)).toEqual(['started', 'failed']);
    });

    it('a download larger than the free space is refused after the manifest, and staging removed', () => {
      const o = r.downloadRefused;
      names(o, new RegExp(`^${mount}/staging: not enough free space to stage bundle [0-9a-f]{12}`));
      untouched(o);
      expect(o.journalAfter).toBe(o.journalBefore);
      expect(o.filled).toBe(false);
    });

    it('a download that meets a full disk mid-write is refused, staging removed, the space given back', () => {
      const o = r.downloadEnospc;
      expect(o.filled).toBe(true);
      names(o, new RegExp(`^${mount}/staging: the disk filled up while staging bundle [0-9a-f]{12} \\(ENOSPC\\)`));
      untouched(o);
      expect(o.journalAfter).toBe(o.journalBefore);
      // Nothing of the attempt is left on the disk.
      expect(o.freeAfter).toBe(r.downloadRefused.freeAfter);
    });

    it('with the disk freed, the same download goes through', () => {
      expect(r.downloadAfter.threw, stderr).toBeUndefined();
      expect(r.downloadAfter.reason).toBeUndefined();
      expect(r.downloadAfter.state).toBe('downloaded');
    });
  });
});
