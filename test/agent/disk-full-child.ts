// Child of the disk-full test, run inside a private mount namespace with a small tmpfs mounted at
// `mount` (see tmpfs.ts). It copies a device store with one committed bundle onto the tmpfs, then
// tries four stagings there — install and download, each refused by the free-space check and each
// hitting ENOSPC mid-write because a filler file takes the disk after the check — and prints, as
// one JSON line, what each left behind for the test to judge.
import { closeSync, ftruncateSync, fstatSync, openSync, writeSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BundleStore, DownloadError, downloadBundle, freeBytes, installBundle, type FileRef } from '../../src/agent/index.js';
import { loadTrustStore, verifyBundle } from '../../src/bundle/index.js';

export interface ChildInput {
  mount: string;
  /** A store with one committed bundle, copied onto the tmpfs. */
  store: string;
  trustDir: string;
  /** Too large for the tmpfs: refused by the check. */
  big: { dir: string; manifest: FileRef; signature: FileRef };
  /** Fits at check time: ENOSPC comes from the filler. */
  mid: { dir: string; manifest: FileRef; signature: FileRef };
  brokerUrl: string;
}

export interface Outcome {
  /** installBundle's state and reason, or the DownloadError's reason. */
  state?: string;
  reason?: string;
  /** Not a refusal but something else thrown. */
  threw?: string;
  journalBefore: string;
  journalAfter: string;
  /** Journal entries parse (the store reads them). */
  journalStates: string[];
  currentBefore: string | null;
  currentAfter: string | null;
  /** The current bundle verified whole (hashes and signature) after the attempt. */
  currentVerified: boolean;
  /** Entries of <store>/bundles and of the store root after the attempt. */
  bundles: string[];
  rootEntries: string[];
  stagingExists: boolean;
  /** Whether the filler had to be written (the ENOSPC cases) and the bytes free after the attempt, filler removed. */
  filled: boolean;
  freeAfter: number;
}

const input = JSON.parse(process.argv[2]!) as ChildInput;
const trust = await loadTrustStore(input.trustDir);
const root = path.join(input.mount, 'store');
const staging = path.join(input.mount, 'staging');
const filler = path.join(input.mount, 'filler.bin');

/** Write `filler` until the disk is full, then give back `leave` bytes (room for a journal line). */
function fillDisk(leave: number): void {
  const fd = openSync(filler, 'a');
  const chunk = Buffer.alloc(256 * 1024, 7);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  const size = fstatSync(fd).size;
  ftruncateSync(fd, Math.max(0, size - leave));
  closeSync(fd);
}

async function attempt(run: (fill: (leave: number) => void) => Promise<{ state?: string; reason?: string }>): Promise<Outcome> {
  await fsp.rm(root, { recursive: true, force: true });
  await fsp.cp(input.store, root, { recursive: true });
  const store = await BundleStore.open(root);
  const journalBefore = await fsp.readFile(store.journalFile, 'utf8');
  const currentBefore = await store.current();
  let filled = false;
  const fill = (leave: number) => {
    if (!filled) fillDisk(leave);
    filled = true;
  };
  const out: Pick<Outcome, 'state' | 'reason' | 'threw'> = {};
  try {
    Object.assign(out, await run(fill));
  } catch (err) {
    if (err instanceof DownloadError) out.reason = err.reason;
    else out.threw = (err as Error).stack ?? String(err);
  }
  const currentAfter = await store.current();
  const currentVerified = currentAfter !== null && (await verifyBundle(store.bundleDir(currentAfter), { trust, requireSignature: true }).then(() => true, () => false));
  const result: Outcome = {
    ...out,
    journalBefore,
    journalAfter: await fsp.readFile(store.journalFile, 'utf8'),
    journalStates: (await store.journal()).map((e) => e.state),
    currentBefore,
    currentAfter,
    currentVerified,
    bundles: (await fsp.readdir(store.bundlesDir)).sort(),
    rootEntries: (await fsp.readdir(root)).sort(),
    stagingExists: await fsp.stat(staging).then(() => true, () => false),
    filled,
    freeAfter: 0,
  };
  await fsp.rm(filler, { force: true });
  await fsp.rm(staging, { recursive: true, force: true });
  result.freeAfter = await freeBytes(input.mount);
  return result;
}

const install = (bundle: string, onLog?: (line: string) => void) =>
  installBundle({ root, bundle, trustDir: input.trustDir, ...(onLog ? { onLog } : {}) }).then((r) => ({ state: r.state, ...(r.reason ? { reason: r.reason } : {}) }));
const download = (b: ChildInput['big'], onProgress?: () => void) =>
  downloadBundle({ brokerUrl: input.brokerUrl, fleet: 'lab', device: 'pi-full', manifest: b.manifest, signature: b.signature, staging, have: [], verify: { trust, requireSignature: true }, requestTimeoutMs: 2_000, ...(onProgress ? { onProgress } : {}) }).then(() => ({ state: 'downloaded' }));

const results = {
  mountFree: await freeBytes(input.mount),
  installRefused: await attempt(() => install(input.big.dir)),
  // The 'started' line is on disk when onLog reports it; the disk fills before the first stage file is written.
  installEnospc: await attempt((fill) => install(input.mid.dir, (line) => line.endsWith(': started') && fill(64 * 1024))),
  downloadRefused: await attempt(() => download(input.big)),
  downloadEnospc: await attempt((fill) => download(input.mid, () => fill(0))),
  // With the filler gone the same download goes through: the refusal cost nothing lasting.
  downloadAfter: await attempt(() => download(input.mid)),
};
process.stdout.write(JSON.stringify(results) + '\n');
