// `edgeexit run` through the CLI's main(): --json shape, folder expansion (recursive, sorted),
// the table and summary, unreadable files (reported, exit code 2), bad flags.
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { compileModel } from '../../src/compiler/index.js';
import { readModel, writeModel } from '../../src/onnx/index.js';
import { collectInputs, parseThresholds } from '../../src/cli/commands/run.js';
import { runCli } from '../cli/helpers.js';
import { FMNIST, ZOO, scratch, trustedSigner } from './helpers.js';

let dir: string;
let bundle: string;
let folder: string;
let labels: string[];
let trust: string;

beforeAll(async () => {
  dir = await scratch('run-cmd');
  bundle = path.join(dir, 'bundle');
  const signer = await trustedSigner(dir);
  trust = signer.trustDir;
  const r = await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: bundle, key: signer.privateKey });
  labels = r.manifest.labels;
  // A folder with a nested sub-folder, a non-image file (skipped) and a PNG written by sharp.
  folder = path.join(dir, 'imgs');
  await fsp.mkdir(path.join(folder, 'sub'), { recursive: true });
  const bags = (await fsp.readdir(path.join(FMNIST, 'bag'))).sort().slice(0, 3);
  await fsp.copyFile(path.join(FMNIST, 'bag', bags[0]!), path.join(folder, 'b.png'));
  await fsp.copyFile(path.join(FMNIST, 'bag', bags[1]!), path.join(folder, 'sub', 'a.png'));
  await fsp.copyFile(path.join(FMNIST, 'bag', bags[2]!), path.join(folder, 'a.png'));
  await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toFile(path.join(folder, 'c.png'));
  await fsp.writeFile(path.join(folder, 'notes.txt'), 'not an image');
}, 120_000);

describe('edgeexit run', () => {
  it('--json prints one object per input with file, label, exit, confidence and latencyMs', async () => {
    const r = await runCli('run', bundle, '--trust-dir', trust, folder, '--json', '--threshold', '0.9,0.9', '--threads', '1', '--batch', '2');
    // The only thing on stderr: the 40×30 image is stretched to the model's 28×28 (one line).
    expect(r.err).toBe(`warn: ${path.join(folder, 'c.png')} is 40×30 but the model reads 28×28: resize policy 'stretch' distorts its aspect ratio (fix: set "resize": "cover" or "contain" in the model's edgeexit.preprocess and compile again, or crop the images first)`);
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => path.relative(folder, l.file as string))).toEqual(['a.png', 'b.png', 'c.png', path.join('sub', 'a.png')]);
    for (const l of lines) {
      expect(labels).toContain(l.label);
      expect([0, 1, 2]).toContain(l.exit);
      expect(l.exitName).toBe(`exit_${l.exit as number}`);
      expect(typeof l.confidence).toBe('number');
      expect(l.confidence as number).toBeGreaterThan(0);
      expect(l.confidence as number).toBeLessThanOrEqual(1);
      expect(typeof l.latencyMs).toBe('number');
      expect((l.stageLatencyMs as number[]).length).toBe((l.exit as number) + 1);
      expect(l.metric).toBe('max-prob');
    }
    // Sharp-made red square aside, the Fashion-MNIST bags are classified as bags.
    expect(lines.filter((l) => !(l.file as string).endsWith('c.png')).map((l) => l.label)).toEqual(['bag', 'bag', 'bag']);
  });

  it('prints a table and a summary with the exit histogram and mean latency', async () => {
    const r = await runCli('run', bundle, '--trust-dir', trust, path.join(folder, 'a.png'), path.join(folder, 'b.png'), '--threads', '1');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^file\s+label\s+confidence\s+exit\s+latency ms/);
    expect(r.out).toMatch(/a\.png\s+bag\s+[\d.]+\s+2 \(exit_2\)/);
    expect(r.out).toContain('policy    max-prob, thresholds none (every sample runs to the last exit)');
    expect(r.out).toContain('exits     0 (exit_0) 0 = 0.0%, 1 (exit_1) 0 = 0.0%, 2 (exit_2) 2 = 100.0%');
    expect(r.out).toMatch(/latency   mean [\d.]+ ms per image over 2 images in 2 batches/);
    // No early exit to decide: the stages ran joined into one session.
    expect(r.out).toMatch(/cascade [\d.]+ ms = stages [\d.]+ ms \(joined into one session\) \+ overhead/);
    const staged = await runCli('run', bundle, '--trust-dir', trust, path.join(folder, 'a.png'), '--threshold', '0.99,0.99', '--threads', '1');
    expect(staged.out).not.toContain('joined');
  });

  it('reports an unreadable image by name, classifies the rest and exits 2', async () => {
    const broken = path.join(dir, 'broken.png');
    await fsp.writeFile(broken, 'garbage');
    const r = await runCli('run', bundle, '--trust-dir', trust, path.join(folder, 'a.png'), broken, '--json', '--threads', '1');
    expect(r.code).toBe(2);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]!.label).toBe('bag');
    expect(lines[1]!.file).toBe(broken);
    expect(lines[1]!.error).toMatch(/cannot decode image/);
    expect(r.err).toContain(`1 of 2 inputs could not be read: ${broken}`);
  });

  it('refuses bad thresholds and a tampered bundle with clear errors', async () => {
    let r = await runCli('run', bundle, '--trust-dir', trust, folder, '--threshold', '0.9,1.5', '--threads', '1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/threshold for exit 1 \(exit_1\): expected a number in \[0, 1\]/);
    r = await runCli('run', bundle, '--trust-dir', trust, folder, '--threshold', '0.9,x');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--threshold item 2/);
    const copy = path.join(dir, 'tampered');
    await fsp.cp(bundle, copy, { recursive: true });
    await fsp.appendFile(path.join(copy, 'stage-0.onnx'), 'x');
    r = await runCli('run', copy, '--trust-dir', trust, folder);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/stage-0\.onnx: content does not match the manifest/);
  });

  // Finding 6 of issue 12: opening a FIFO for reading blocks until a writer comes, i.e. forever.
  it('skips a FIFO named like an image with a one-line warning instead of hanging', async () => {
    const withFifo = path.join(dir, 'with-fifo');
    await fsp.mkdir(withFifo);
    await fsp.copyFile(path.join(folder, 'a.png'), path.join(withFifo, 'a.png'));
    execFileSync('mkfifo', [path.join(withFifo, 'b.png')]);
    const r = await runCli('run', bundle, '--trust-dir', trust, withFifo, '--json', '--threads', '1');
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n').map((l) => path.basename((JSON.parse(l) as { file: string }).file))).toEqual(['a.png']);
    expect(r.err.trim().split('\n').filter((l) => l.includes('b.png'))).toEqual([`warning: skipping ${path.join(withFifo, 'b.png')}: not a regular file (a FIFO, socket or device)`]);
    // Named directly, too.
    const warnings: string[] = [];
    await expect(collectInputs([path.join(withFifo, 'b.png')], (l) => warnings.push(l))).resolves.toEqual([]);
    expect(warnings).toHaveLength(1);
  });

  // Finding 6 of issue 12: a forged 100000×100000 input size died with a stack trace (exit 70).
  it('a preprocess size of 100000×100000 in a manifest or in model metadata is bad input (exit 2) naming the field and the bound', async () => {
    const copy = path.join(dir, 'huge-manifest');
    await fsp.cp(bundle, copy, { recursive: true });
    const file = path.join(copy, 'manifest.json');
    const m = JSON.parse(await fsp.readFile(file, 'utf8')) as { input: { preprocess: { size: number[] } } };
    m.input.preprocess.size = [100000, 100000];
    await fsp.writeFile(file, JSON.stringify(m));
    const r = await runCli('run', copy, folder);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/input\.preprocess\.size\[0\]: .*4096/);
    expect(r.err).not.toMatch(/\n\s+at /);

    const model = await readModel(ZOO);
    const spec = JSON.parse(model.metadata['edgeexit.preprocess']!) as { size: number[] };
    model.setMetadata('edgeexit.preprocess', JSON.stringify({ ...spec, size: [100000, 100000] }));
    const huge = path.join(dir, 'huge-meta.onnx');
    await writeModel(model, huge);
    const e = await runCli('eval', huge, '--data', 'calibration', '--limit', '4');
    expect(e.code).toBe(2);
    expect(e.err).toMatch(/metadata_props edgeexit\.preprocess: size: expected \[height, width\] of integers from 1 to 4096, got \[100000,100000\]/);
    expect(e.err).not.toMatch(/\n\s+at /);
  });

  it('parses thresholds and expands folders', async () => {
    expect(parseThresholds(undefined)).toBeUndefined();
    expect(parseThresholds('none')).toBeNull();
    expect(parseThresholds(' 0.5, 0.25')).toEqual([0.5, 0.25]);
    await expect(collectInputs([path.join(dir, 'run-cmd-empty-nothing')])).resolves.toEqual([path.join(dir, 'run-cmd-empty-nothing')]);
    const empty = path.join(dir, 'empty');
    await fsp.mkdir(empty);
    await expect(collectInputs([empty])).rejects.toThrow(/no images in this folder/);
  });
});
