// The model cards' accuracy figures must reproduce with `edgeexit eval` on the full Fashion-MNIST
// test set (Debian's dataset-fashion-mnist, installed by .ci/run).
import { describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { runCli } from './helpers.js';
import { FASHION_MNIST } from '../support/require.js';

async function results(name: string): Promise<Record<string, any>> {
  return JSON.parse(await fsp.readFile(`models/${name}/results.json`, 'utf8'));
}

async function evalTest(file: string): Promise<{ count: number; exits: { accuracy: number }[]; oracle: { shares: number[]; none: number } }> {
  const r = await runCli('eval', file, '--data', 'test', '--json');
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.out);
}

FASHION_MNIST.describe('model cards reproduce', () => {
  it.each(['fmnist-branchy', 'fmnist-branchy-wide'])('%s: every exit and the oracle distribution match results.json on all 10,000 test images', async (name) => {
    const rec = await results(name);
    const got = await evalTest(`models/${name}/${name}.onnx`);
    expect(got.count).toBe(10000);
    expect(got.exits).toHaveLength(rec.testAccuracy.length);
    got.exits.forEach((e, k) => expect(e.accuracy).toBeCloseTo(rec.testAccuracy[k], 3));
    got.oracle.shares.forEach((s, k) => expect(s).toBeCloseTo(rec.oracleShares[k], 3));
    expect(got.oracle.none).toBeCloseTo(rec.oracleNone, 3);
    expect(got.exits[got.exits.length - 1]!.accuracy).toBeGreaterThanOrEqual(0.92);
    const card = await fsp.readFile(`models/${name}/README.md`, 'utf8');
    expect(card).toContain(`${(100 * rec.testAccuracy[2]).toFixed(2)}%`);
  });

  it.each(['fmnist-cbnet', 'fmnist-cbnet-lite'])('%s: the classifier alone and the pair match results.json', async (name) => {
    const rec = await results(name);
    const light = await evalTest(`models/${name}/classifier.onnx`);
    const pair = await evalTest(`models/${name}/pipeline.onnx`);
    expect(light.exits[0]!.accuracy).toBeCloseTo(rec.testAccuracy.light, 3);
    expect(pair.exits[0]!.accuracy).toBeCloseTo(rec.testAccuracy.pair, 3);
    const card = await fsp.readFile(`models/${name}/README.md`, 'utf8');
    expect(card).toContain(`${(100 * rec.testAccuracy.pair).toFixed(2)}%`);
  });
});

// Each CBNet folder with the backbone its converter is sized for (scripts/bench.ts pairs them so).
describe.each([
  ['fmnist-cbnet', 'fmnist-branchy-wide'],
  ['fmnist-cbnet-lite', 'fmnist-branchy'],
])('%s is sized for %s', (name, backbone) => {
  it('the pair costs under a quarter of the full backbone, and the card gives the cost of every exit point', async () => {
    const rec = await results(name);
    const b = await results(backbone);
    // The backbone without early exit: everything but the side heads (exit 0's and exit 1's).
    const full = Object.entries(b.macsByLayer as Record<string, number>)
      .filter(([k]) => !k.startsWith('stage1.head') && !k.startsWith('head2'))
      .reduce((a, [, v]) => a + v, 0);
    expect(rec.macs.pair).toBeLessThan(full / 4);
    const card = await fsp.readFile(`models/${name}/README.md`, 'utf8');
    expect(card).toContain(`\`--backbone\n${backbone}.onnx\``);
    const costs = card.slice(card.indexOf('## Cost per exit point'));
    expect(costs.length).toBeLessThan(card.length);
    for (const point of ['classifier on the image', 'converter → classifier', 'backbone exit_1', 'backbone exit_2']) expect(costs).toContain(point);
    expect(costs).toContain(rec.macs.pair.toLocaleString('en-US'));
    expect(costs).toContain(full.toLocaleString('en-US'));
    expect(costs).toMatch(/fp32 ms \| fp32 cumulative ms/);
  });
});

it('fmnist-cbnet with fmnist-branchy-wide: the pair is within 1 pp of the backbone\'s last exit', async () => {
  const rec = await results('fmnist-cbnet');
  const b = await results('fmnist-branchy-wide');
  expect(rec.testAccuracy.pair).toBeGreaterThanOrEqual(b.testAccuracy[2] - 0.01);
});
