// Byte-identical bundles: the compiler, for the zoo models, writes exactly the stage files,
// manifest and report it wrote when these hashes were recorded (test/fixtures/compiler/golden.json).
// It pins refactors of the compile pipeline: a change that alters a bundle must say so by
// re-recording (EDGEEXIT_RECORD_GOLDEN=1 npx vitest run test/compiler/golden.test.ts) and
// explaining why in the commit. Fields that differ between runs or checkouts are taken out
// before hashing: the creation time, the edgeexit version and the command line (provenance), and
// the checkout's own path inside report.json (and so the report's hash inside the manifest), and
// golden.bin's numbers (only its layout is pinned; see goldenShape).
// Stage files and manifests hash the same from any checkout path (the hashes were recorded from a
// copy of the base commit under /tmp and matched in the worktree).
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileModel, type CompileOptions } from '../../src/compiler/index.js';
import { MANIFEST_FILE, REPORT_FILE } from '../../src/bundle/manifest.js';
import { GOLDEN_FILE, decodeGolden } from '../../src/bundle/golden.js';
import { REPO, scratch } from './helpers.js';

const GOLDEN = path.join(REPO, 'test', 'fixtures', 'compiler', 'golden.json');
const BRANCHY = path.join(REPO, 'models', 'fmnist-branchy', 'fmnist-branchy.onnx');
const CBNET = path.join(REPO, 'models', 'fmnist-cbnet');
const RECORD = process.env.EDGEEXIT_RECORD_GOLDEN === '1';

/** The compiles pinned, named; small calibration sets keep them quick. */
const CASES: Record<string, Omit<CompileOptions, 'out'>> = {
  'branchy-fp32': { model: BRANCHY, device: 'rpi4', precision: 'fp32', calibrationLimit: 32 },
  'branchy-int8': { model: BRANCHY, device: 'rpi4', precision: 'int8', calibrationLimit: 64 },
  'cbnet-fp32': { model: CBNET, device: 'rpi4', precision: 'fp32', calibrationLimit: 32 },
  'cbnet-fp32-backbone': { model: CBNET, device: 'rpi4', precision: 'fp32', calibrationLimit: 32, backbone: BRANCHY },
  'cbnet-int8': { model: CBNET, device: 'rpi4', precision: 'int8', calibrationLimit: 64 },
  'cbnet-int8-backbone': { model: CBNET, device: 'rpi4', precision: 'int8', calibrationLimit: 64, backbone: BRANCHY },
  'branchy-fp16': { model: BRANCHY, device: 'jetson-orin-nano', precision: 'fp16', calibrationLimit: 32 },
  'cbnet-fp16': { model: CBNET, device: 'jetson-orin-nano', precision: 'fp16', calibrationLimit: 32 },
};

const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** The checkout's path replaced by a marker, so a report hashes the same in every clone. */
function portableReport(text: string): string {
  return text.split(REPO.replace(/\/$/, '')).join('<repo>');
}

/** The manifest without what varies between runs and checkouts (see the header). */
function stableManifest(text: string): string {
  const m = JSON.parse(text) as { provenance: Record<string, unknown>; files: { file: string; sha256?: string; bytes?: number }[]; blocks?: { files: Record<string, string[]> } };
  delete m.provenance.created;
  delete m.provenance.edgeexitVersion;
  delete m.provenance.command;
  m.files = m.files.map((f) => (f.file === REPORT_FILE || f.file === GOLDEN_FILE ? { file: f.file } : f));
  if (m.blocks) for (const f of [REPORT_FILE, GOLDEN_FILE]) delete m.blocks.files[f];
  return JSON.stringify(m);
}

/**
 * golden.bin's layout (tensor names and dims), not its numbers: the expected outputs are what
 * onnxruntime computed on the compiling CPU, and another CPU's kernels round differently.
 */
function goldenShape(data: Uint8Array): string {
  const g = decodeGolden(data);
  return sha(JSON.stringify({ input: g.input.dims, outputs: [...g.outputs].map(([k, o]) => [k, o.name, o.tensor.dims]) }));
}

/** file name → sha256 of every file of a bundle, manifest and report made stable first. */
async function bundleHashes(out: string): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  for (const f of (await fsp.readdir(out)).sort()) {
    const data = await fsp.readFile(path.join(out, f));
    hashes[f] = f === MANIFEST_FILE ? sha(stableManifest(data.toString('utf8'))) : f === REPORT_FILE ? sha(portableReport(data.toString('utf8'))) : f === GOLDEN_FILE ? goldenShape(data) : sha(data);
  }
  return hashes;
}

type Golden = { sources: Record<string, string>; bundles: Record<string, Record<string, string>> };

async function sourceHashes(): Promise<Record<string, string>> {
  const files = [BRANCHY, path.join(CBNET, 'converter.onnx'), path.join(CBNET, 'classifier.onnx')];
  return Object.fromEntries(await Promise.all(files.map(async (f) => [path.relative(REPO, f), sha(await fsp.readFile(f))] as const)));
}

describe('compiled bundles stay byte-identical', async () => {
  const golden: Golden | undefined = existsSync(GOLDEN) ? (JSON.parse(await fsp.readFile(GOLDEN, 'utf8')) as Golden) : undefined;
  const recorded: Golden = { sources: await sourceHashes(), bundles: {} };

  it('the zoo models are the ones the hashes were recorded from', () => {
    if (RECORD) return;
    expect(golden, `${GOLDEN}: missing; record it with EDGEEXIT_RECORD_GOLDEN=1`).toBeDefined();
    // A retrained zoo model changes every bundle: re-record, then the pins hold again.
    expect(recorded.sources).toEqual(golden!.sources);
  });

  for (const [name, opts] of Object.entries(CASES)) {
    it(`${name}: every stage file, the manifest and the report hash as recorded`, async () => {
      const out = path.join(await scratch(`golden-${name}`), 'bundle');
      await compileModel({ ...opts, out, latency: false, now: new Date('2026-01-01T00:00:00Z') });
      const got = await bundleHashes(out);
      recorded.bundles[name] = got;
      if (RECORD) return;
      expect(got).toEqual(golden!.bundles[name]);
    }, 240_000);
  }

  it.runIf(RECORD)('records the hashes', async () => {
    await fsp.writeFile(GOLDEN, JSON.stringify(recorded, null, 2) + '\n');
  });
});
