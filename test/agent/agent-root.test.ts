// `edgeexit install` and `edgeexit agent --root` together, with real parts: the agent runs the
// store's current bundle and publishes to the collector's embedded broker; an install of a newer
// bundle switches the agent's runner in place (no restart, no failed frame); a refused install
// leaves it running. Also the CLI's own output and exit codes.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleStore, installBundle } from '../../src/agent/index.js';
import { agentCommand } from '../../src/cli/commands/agent.js';
import { startCollector } from '../../src/fleet/index.js';
import { runCli } from '../cli/helpers.js';
import { fmnistImages, scratch } from '../runtime/helpers.js';
import { compileFixture, newer, variant, type Fixture } from './helpers.js';
import { until as waitUntil } from '../support/wait.js';

let fx: Fixture;
let v1: string;
let v2: string;

beforeAll(async () => {
  fx = await compileFixture(await scratch('agent-root'));
  v1 = await newer(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, '1.0.0');
  v2 = await newer(fx.bundle, path.join(fx.dir, 'v2'), fx.privateKey, '1.1.0');
}, 120_000);

const until = (pred: () => boolean, what: string, ms = 60_000): Promise<void> => waitUntil(pred, what, ms, 25);

describe('edgeexit install and agent --root', () => {
  it('install prints the result; a refused bundle exits 1 with the reason and leaves current', async () => {
    const root = await scratch('cli-store');
    const ok = await runCli('install', v2, '--root', root, '--trust-dir', fx.trustDir);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toMatch(/^committed {2}[0-9a-f]{64}; self-test: golden I\/O of 3 stages matched/);
    const down = await runCli('install', v1, '--root', root, '--trust-dir', fx.trustDir);
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/not installed \(failed\): model \S+ 1\.0\.0 is older than the active 1\.1\.0/);
    const store = await BundleStore.open(root);
    expect((await store.manifestOf((await store.current())!)).model.version).toBe('1.1.0');
    const bad = await runCli('install', v1, '--root', root, '--trust-dir', fx.trustDir, '--keep', '-1');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--keep: expected an integer ≥ 0, got -1/);
  });

  it('the agent switches to a newly installed bundle without a restart or a failed frame', async () => {
    const root = await scratch('agent-store');
    expect((await installBundle({ root, bundle: v1, trustDir: fx.trustDir })).state).toBe('committed');
    const watch = path.join(fx.dir, 'watch');
    await fsp.mkdir(watch, { recursive: true });
    for (const f of await fmnistImages(1)) await fsp.copyFile(f, path.join(watch, path.basename(f)));
    const collector = await startCollector({ dbFile: path.join(fx.dir, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: () => undefined });
    const log: string[] = [];
    let seen = 0;
    let failed = 0;
    const ac = new AbortController();
    try {
      const done = agentCommand(
        {
          root,
          trustDir: fx.trustDir,
          watch,
          loop: true,
          telemetry: collector.url,
          deviceId: 'pi-store',
          stateDir: path.join(fx.dir, 'state'),
          threads: 1,
          pollMs: 20,
          storePollMs: 50,
          onItems: (items) => {
            seen += items.length;
            failed += items.filter((i) => !i.ok).length;
          },
        },
        { out: () => undefined, err: (l) => log.push(l) },
        ac.signal,
      );
      await until(() => seen >= 10, 'frames on v1');
      const r = await installBundle({ root, bundle: v2, trustDir: fx.trustDir });
      expect(r.state, r.reason).toBe('committed');
      await until(() => log.some((l) => /switched to \S+ 1\.1\.0/.test(l)), 'the switch');
      const atSwitch = seen;
      await until(() => seen >= atSwitch + 10, 'frames on v2');
      // A refused install changes nothing the agent runs.
      const refused = await installBundle({ root, bundle: await variant(v2, path.join(fx.dir, 'unsigned'), null, (m) => ({ ...m, model: { ...m.model, version: '1.2.0' } })), trustDir: fx.trustDir });
      expect(refused.state).toBe('failed');
      ac.abort();
      const res = await done;
      expect(res.stats.failed).toBe(0);
      expect(failed).toBe(0);
      expect(log.filter((l) => /switched to/.test(l))).toHaveLength(1);
    } finally {
      ac.abort();
      await collector.close();
    }
  }, 120_000);

  it('agent --root refuses an empty store and a bundle together with --root', async () => {
    const root = await scratch('empty-store');
    const io = { out: () => undefined, err: () => undefined };
    const base = { watch: fx.dir, telemetry: 'mqtt://127.0.0.1:1', trustDir: fx.trustDir };
    await expect(agentCommand({ ...base, root }, io, new AbortController().signal)).rejects.toThrow(/has no current bundle.*edgeexit install/);
    await expect(agentCommand({ ...base, root, bundle: v1 }, io, new AbortController().signal)).rejects.toThrow(/give a bundle or a store, not both/);
  });
});
