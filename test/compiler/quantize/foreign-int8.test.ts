// A model the zoo did not make — ResNet-style, BatchNorm kept, residual Adds, pooled heads, a
// MatMul head and odd output names — quantised to int8 for rpi4 still agrees with its float self.
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import sharp from 'sharp';
import { compileModel } from '../../../src/compiler/index.js';
import { RESNET, RESNET_LABELS, RESNET_PRE, scratch } from '../helpers.js';

async function syntheticFolder(dir: string, labels: string[], perClass: number): Promise<void> {
  // Deterministic images with class-dependent structure (a coloured bar at a class-specific place).
  let seed = 7;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (const [c, label] of labels.entries()) {
    await fsp.mkdir(path.join(dir, label), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const w = 32, h = 32, px = Buffer.alloc(w * h * 3);
      for (let p = 0; p < w * h; p++) {
        const y = Math.floor(p / w);
        const bar = Math.abs(y - ((c * 7) % h)) < 4 ? 160 : 0;
        for (let k = 0; k < 3; k++) px[p * 3 + k] = Math.min(255, Math.floor(rnd() * 90) + (k === c % 3 ? bar : 0));
      }
      await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path.join(dir, label, `${i}.png`));
    }
  }
}

describe('int8 on a model the zoo did not make', () => {
  it('resnet-exits for rpi4: every exit agrees with float on most images and the stages shrink', async () => {
    const dir = await scratch('foreign-int8');
    const labels = (await fsp.readFile(RESNET_LABELS, 'utf8')).split('\n').map((s) => s.trim()).filter(Boolean);
    const calib = path.join(dir, 'calib');
    await syntheticFolder(calib, labels, 24);
    const r = await compileModel({ model: RESNET, device: 'rpi4', out: path.join(dir, 'b'), precision: 'int8', preprocess: RESNET_PRE, labels: RESNET_LABELS, calibration: calib, maxAccuracyDrop: 100, latency: false });
    const verify = r.report.quantization!.verify;
    expect(verify.length).toBe(r.report.stages.length);
    for (const v of verify) expect(v.agreement).toBeGreaterThanOrEqual(0.95);
    const floatBytes = r.report.stages.reduce((a, s) => a + s.floatBytes, 0);
    const bytes = r.report.stages.reduce((a, s) => a + s.bytes, 0);
    // A 70 KB model: the Q/DQ nodes are a large share of the file, so it shrinks less than the zoo model.
    expect(bytes).toBeLessThan(floatBytes * 0.8);
  });
});
