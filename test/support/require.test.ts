// The requirement helper: a missing program is reported with the apt package that brings it.
import { describe, expect, it } from 'vitest';
import { need } from './require.js';

describe('need', () => {
  it('names what is missing, where it looked and the apt-get line; get() throws it', () => {
    const n = need({ what: 'frobtool', apt: 'frob-utils', paths: ['/nonexistent/frobtool', '/nonexistent/bin/frobtool'] });
    expect(n.path).toBeUndefined();
    expect(n.problem).toBe('frobtool not found (looked at /nonexistent/frobtool, /nonexistent/bin/frobtool): apt-get install frob-utils (.ci/run does)');
    expect(() => n.get()).toThrow(n.problem);
  });

  it('finds the first path that exists', () => {
    const n = need({ what: 'node', apt: 'nodejs', paths: ['/nonexistent/node', process.execPath] });
    expect(n.get()).toBe(process.execPath);
  });

  it('a path whose check fails counts as missing, with the reason', () => {
    const n = need({ what: 'node with frob', apt: 'node-frob', paths: [process.execPath], check: () => 'cannot load frob' });
    expect(n.path).toBeUndefined();
    expect(n.problem).toBe('node with frob cannot load frob: apt-get install node-frob (.ci/run does)');
  });
});
