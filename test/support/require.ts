// System programs and data the tests use, found once, with the Debian package that brings each.
// Missing one: the tests that need it are skipped on a developer's machine, but with CI=true they
// FAIL naming the apt package, so a CI machine without it cannot go green having tested nothing.
// .ci/run installs every package listed here.
import { existsSync } from 'node:fs';
import path from 'node:path';
// vitest only inside a test run: the benchmarks (npm run bench*) import the broker and PostgreSQL
// helpers, which find their programs here, and vitest refuses to load outside its runner.
const { describe, it } = process.env.VITEST ? await import('vitest') : { describe: outsideVitest as never as typeof import('vitest').describe, it: outsideVitest as never as typeof import('vitest').it };
function outsideVitest(): never {
  throw new Error('test/support/require.ts: describe/it need the vitest runner');
}
import { FASHION_MNIST_DIR } from '../../src/data/idx.js';
import { postgresBinDirs } from './postgres.js';

/** Something on disk the tests need and the Debian package that provides it. */
export interface Requirement {
  /** Human name, e.g. `mosquitto (MQTT broker)`. */
  what: string;
  /** The Debian package to install. */
  apt: string;
  /** Where to look; the first that exists is used. */
  paths: readonly string[];
  /** A further check on the path found (e.g. that a module imports): the reason it fails, or undefined. */
  check?: (path: string) => string | undefined;
}

/** A requirement as found on this machine, with suite wrappers that skip or fail when it is missing. */
export interface Need {
  /** The first path that exists, or undefined. */
  path: string | undefined;
  /** One line: what is missing, where it was looked for, and the apt-get line. */
  problem: string;
  /** `describe` when present; otherwise skipped, or with CI=true one failing test that names the package. */
  describe(name: string, fn: () => void): void;
  /** `it` likewise. */
  it(name: string, fn: () => unknown, timeout?: number): void;
  /** The path, or throws `problem` (for a beforeAll in a suite that cannot run without it). */
  get(): string;
}

/** CI=true (or any value but empty, 0 and false), as CI services set it and .ci/run exports it. */
export const IN_CI = !['', '0', 'false'].includes((process.env.CI ?? '').toLowerCase());

/**
 * Look for a requirement.
 *
 * @example
 * const TOOL = need({ what: 'promtool', apt: 'prometheus', paths: ['/usr/bin/promtool'] });
 * TOOL.describe('metrics exposition', () => { it('…', () => run(TOOL.get())); });
 */
export function need(r: Requirement): Need {
  const existing = r.paths.find((p) => existsSync(p));
  const why = existing === undefined ? `not found (looked at ${r.paths.join(', ')})` : r.check?.(existing);
  const found = why === undefined ? existing : undefined;
  const problem = `${r.what} ${why ?? 'found'}: apt-get install ${r.apt} (.ci/run does)`;
  const fail = (): never => {
    throw new Error(problem);
  };
  return {
    path: found,
    problem,
    describe: (name, fn) => {
      if (found) describe(name, fn);
      else if (IN_CI) describe(name, () => it(`needs ${r.what}`, fail));
      else describe.skip(name, fn);
    },
    it: (name, fn, timeout) => {
      if (found) it(name, fn, timeout);
      else if (IN_CI) it(name, fail);
      else it.skip(name, fn);
    },
    get: () => found ?? fail(),
  };
}

export const MOSQUITTO = need({ what: 'mosquitto (MQTT broker)', apt: 'mosquitto', paths: ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto'] });
export const MOSQUITTO_SUB = need({ what: 'mosquitto_sub (MQTT client)', apt: 'mosquitto-clients', paths: ['/usr/bin/mosquitto_sub', '/usr/local/bin/mosquitto_sub'] });
export const MOSQUITTO_PASSWD = need({ what: 'mosquitto_passwd', apt: 'mosquitto', paths: ['/usr/bin/mosquitto_passwd', '/usr/local/bin/mosquitto_passwd'] });
export const CHROMIUM = need({ what: 'Chromium (headless dashboard tests)', apt: 'chromium', paths: ['/usr/bin/chromium'] });
export const PROMTOOL = need({ what: 'promtool (Prometheus exposition checker)', apt: 'prometheus', paths: ['/usr/bin/promtool'] });
export const FASHION_MNIST = need({
  what: 'the Fashion-MNIST test set',
  apt: 'dataset-fashion-mnist',
  paths: [path.join(FASHION_MNIST_DIR, 't10k-labels-idx1-ubyte.gz')],
});
/** initdb and pg_ctl from Debian's `postgresql`, whatever its major version (tests start their own server: postgres.ts). */
export const POSTGRES = need({
  what: 'PostgreSQL server (initdb, pg_ctl)',
  apt: 'postgresql',
  paths: postgresBinDirs().map((d) => path.join(d, 'initdb')),
  check: (p) => (existsSync(path.join(path.dirname(p), 'pg_ctl')) ? undefined : `no pg_ctl beside ${p}`),
});
export const TAR = need({ what: 'tar', apt: 'tar', paths: ['/usr/bin/tar', '/bin/tar'] });
