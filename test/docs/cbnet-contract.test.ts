// The CBNet contract is stated in the README, short, and in docs/bring-your-own-model.md in full:
// the README links the guide's section, and both name the files, roles and checks the compiler
// actually uses, so the two cannot drift from the code or from each other unnoticed.
import { describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { CBNET_FILES, CBNET_ROLES } from '../../src/compiler/families/index.js';
import { REPO } from '../compiler/helpers.js';

const read = (f: string): Promise<string> => fsp.readFile(path.join(REPO, f), 'utf8');

/** The text of a markdown section, from its heading to the next heading of the same level. */
function section(md: string, heading: string): string {
  const start = md.indexOf(`\n${heading}\n`);
  expect(start, `no '${heading}' section`).toBeGreaterThanOrEqual(0);
  const level = heading.split(' ')[0]!;
  const end = md.indexOf(`\n${level} `, start + heading.length + 2);
  return md.slice(start, end < 0 ? undefined : end);
}

describe('the CBNet contract in the README and the guide', () => {
  it('the README states it and links the guide\'s CBNet section, which exists', async () => {
    const readme = await read('README.md');
    const guide = await read('docs/bring-your-own-model.md');
    expect(readme).toContain('](docs/bring-your-own-model.md#a-cbnet-pair)');
    const full = section(guide, '## A CBNet pair');
    const short = readme.slice(readme.indexOf('**Your own CBNet pair**'), readme.indexOf('\n## ', readme.indexOf('**Your own CBNet pair**')));
    expect(short.length).toBeGreaterThan(0);
    for (const text of [short, full].map((t) => t.replace(/\s+/g, ' '))) {
      for (const f of Object.values(CBNET_FILES)) expect(text).toContain(`\`${f}\``);
      for (const r of Object.values(CBNET_ROLES)) expect(text).toContain(r);
      // The facts both state: same dims, normalised like the classifier's input, stage 0 + exit 0, logits, dynamic batch.
      expect(text).toMatch(/same dims/i);
      expect(text).toMatch(/\(x − mean\) ?\/ ?std/);
      expect(text).toMatch(/stage 0 (\+|plus) exit 0/);
      expect(text).toMatch(/logits/);
      expect(text).toMatch(/dynamic batch/);
    }
    // The guide names the rules' module as it is now.
    expect(full).toContain('src/compiler/families/cbnet.ts');
    await expect(fsp.stat(path.join(REPO, 'src/compiler/families/cbnet.ts'))).resolves.toBeTruthy();
  });
});
