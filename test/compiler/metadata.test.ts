// The model's own metadata carried into the bundle: edgeexit.model / edgeexit.version name it
// (the file name only when they are missing, with a note saying so), and the preprocess spec's
// resize policy reaches the manifest and the runner, which warns once when it stretches an image
// of another aspect ratio.
import { beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import sharp from 'sharp';
import { readModel, writeModel } from '../../src/onnx/index.js';
import { compileModel } from '../../src/compiler/index.js';
import { loadBundle } from '../../src/runtime/bundle-runner.js';
import { SINGLE, scratch } from './helpers.js';

const SPEC = { colorspace: 'gray', size: [12, 12], scale: 1 / 255, mean: [0.5], std: [0.5] };
const LABELS = ['zero', 'one', 'two', 'three'];
let dir: string;

beforeAll(async () => {
  dir = await scratch('metadata');
});

/** The single-exit fixture with its description in metadata_props. */
async function described(name: string, meta: Record<string, string>): Promise<string> {
  const model = await readModel(SINGLE);
  model.setMetadata('edgeexit.labels', JSON.stringify(LABELS));
  for (const [k, v] of Object.entries(meta)) model.setMetadata(k, v);
  const file = path.join(dir, `${name}.onnx`);
  await writeModel(model, file);
  return file;
}

async function compiled(file: string): Promise<Awaited<ReturnType<typeof compileModel>>> {
  return compileModel({ model: file, device: 'x86-host', out: path.join(dir, `${path.basename(file, '.onnx')}-bundle`), latency: false });
}

describe('edgeexit.model / edgeexit.version', () => {
  it('name the bundle instead of the file, with no naming note', async () => {
    const r = await compiled(await described('file-name', { 'edgeexit.preprocess': JSON.stringify(SPEC), 'edgeexit.model': 'mynet', 'edgeexit.version': '1.2.0' }));
    expect(r.manifest.model).toEqual({ name: 'mynet', version: '1.2.0' });
    expect(r.report.model).toMatchObject({ name: 'mynet', version: '1.2.0' });
    expect(r.report.notes.join('\n')).not.toMatch(/after the file/);
  });

  it('when missing, the file names the bundle and a note names the keys to add', async () => {
    const r = await compiled(await described('mynet-meta', { 'edgeexit.preprocess': JSON.stringify(SPEC) }));
    expect(r.manifest.model).toEqual({ name: 'mynet-meta', version: '0' });
    expect(r.report.notes).toContainEqual(expect.stringMatching(/named 'mynet-meta' 0 after the file: the model has no edgeexit\.model metadata \(fix: add edgeexit\.model and edgeexit\.version/));
  });
});

describe('resize policy', () => {
  let wide: Buffer;
  beforeAll(async () => {
    wide = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 90, g: 90, b: 90 } } }).png().toBuffer();
  });

  it('a bundle without one keeps the old manifest (no resize key) and warns once per runner when it stretches', async () => {
    const r = await compiled(await described('stretch', { 'edgeexit.preprocess': JSON.stringify(SPEC) }));
    expect('resize' in r.manifest.input.preprocess).toBe(false);
    const warnings: string[] = [];
    const runner = await loadBundle(r.out, { onWarning: (l) => warnings.push(l) });
    try {
      const first = await runner.classify([wide, wide], { batchSize: 1 });
      expect(first.items.every((i) => i.ok)).toBe(true);
      await runner.classify([{ kind: 'encoded', bytes: wide, name: 'cam.png' }]);
      // A frame already the model's shape is not stretched.
      await runner.classify([await sharp({ create: { width: 24, height: 24, channels: 3, background: { r: 0, g: 0, b: 0 } } }).png().toBuffer()]);
    } finally {
      await runner.close();
    }
    expect(warnings).toEqual([
      "warn: image #0 is 64×48 but the model reads 12×12: resize policy 'stretch' distorts its aspect ratio " +
        '(fix: set "resize": "cover" or "contain" in the model\'s edgeexit.preprocess and compile again, or crop the images first)',
    ]);
  });

  it("'cover' in edgeexit.preprocess reaches the manifest, changes the input and draws no warning", async () => {
    // Left third white, the rest black: stretch keeps a third white, cover's centre crop a sixth.
    const third = await sharp(Buffer.from(Array.from({ length: 48 * 24 }, (_, i) => (i % 48 < 16 ? 255 : 0))), { raw: { width: 48, height: 24, channels: 1 } }).png().toBuffer();
    const cover = await compiled(await described('cover', { 'edgeexit.preprocess': JSON.stringify({ ...SPEC, resize: 'cover' }) }));
    expect(cover.manifest.input.preprocess.resize).toBe('cover');
    const stretch = await compiled(await described('stretch2', { 'edgeexit.preprocess': JSON.stringify(SPEC) }));
    const run = async (bundle: string): Promise<{ warnings: string[]; logits: number[] }> => {
      const warnings: string[] = [];
      const runner = await loadBundle(bundle, { onWarning: (l) => warnings.push(l) });
      try {
        const res = await runner.classify([third]);
        const it = res.items[0]!;
        if (!it.ok) throw it.error;
        return { warnings, logits: [it.confidence, it.score] };
      } finally {
        await runner.close();
      }
    };
    const a = await run(cover.out);
    const b = await run(stretch.out);
    expect(a.warnings).toEqual([]);
    expect(b.warnings).toHaveLength(1);
    expect(a.logits).not.toEqual(b.logits);
  });
});
