// `edgeexit install <bundle|bundle.tar> [--root dir]`: install a bundle into this device's bundle
// store (src/agent/store.ts) the way a flash job will: stage, verify against the trust store,
// check it suits this device, self-test it on the golden I/O the compiler recorded, switch
// `current`, commit. A running `edgeexit agent --root` picks the new bundle up without a restart.
// A refused bundle leaves the running one as it was and fails with the reason (exit code 1).
import { defaultStoreRoot, installBundle, type InstallOptions, type InstallResult } from '../../agent/index.js';
import { EdgeExitError, InputError, formatProblem } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';

export interface InstallCommandOptions {
  bundle: string;
  root?: string;
  trustDir?: string;
  device?: string;
  threads?: number;
  rollback?: boolean;
  keep?: number;
  latencyBudgetMs?: number;
  memoryBudgetMib?: number;
  json?: boolean;
}

function positive(flag: string, v: number | undefined, integer: boolean, min = 0): void {
  if (v === undefined) return;
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) throw new InputError(formatProblem({ where: flag, expected: `${integer ? 'an integer' : 'a number'} ≥ ${min}`, got: String(v) }));
}

function summary(r: InstallResult): string {
  const st = r.selfTest;
  const test = st ? `; self-test: ${st.golden === 'checked' ? `golden I/O of ${st.stages.length} stages matched, ${st.stages.map((s) => `${s.ms.toFixed(2)} ms`).join(' / ')}` : 'loads (no golden I/O in this bundle)'}, ${st.memoryMiB.toFixed(1)} MiB` : '';
  return `${r.state}  ${r.bundle}${r.from ? ` (was ${r.from.slice(0, 12)})` : ''}${test}`;
}

export async function installCommand(opts: InstallCommandOptions, io: CliIO): Promise<InstallResult> {
  positive('--keep', opts.keep, true);
  positive('--threads', opts.threads, true, 1);
  positive('--latency-budget-ms', opts.latencyBudgetMs, false);
  positive('--memory-budget-mib', opts.memoryBudgetMib, false);
  const o: InstallOptions = {
    root: opts.root ?? defaultStoreRoot(),
    bundle: opts.bundle,
    ...(opts.trustDir !== undefined ? { trustDir: opts.trustDir } : {}),
    ...(opts.device !== undefined ? { device: opts.device } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.rollback ? { rollback: true } : {}),
    ...(opts.keep !== undefined ? { keep: opts.keep } : {}),
    ...(opts.latencyBudgetMs !== undefined ? { latencyBudgetMs: opts.latencyBudgetMs } : {}),
    ...(opts.memoryBudgetMib !== undefined ? { memoryBudgetMiB: opts.memoryBudgetMib } : {}),
    onLog: (line) => io.err(line),
  };
  const r = await installBundle(o);
  if (opts.json) io.out(JSON.stringify(r, null, 2));
  else io.out(summary(r));
  if (r.state === 'failed' || r.state === 'rolled-back') {
    throw new EdgeExitError(`${opts.bundle}: not installed (${r.state}): ${r.reason}; the running bundle is unchanged (store ${o.root})`);
  }
  return r;
}

export function installModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder or .tar (edgeexit pack)', demandOption: true })
        .option('root', { type: 'string', describe: 'Bundle store folder (default: $EDGEEXIT_STORE, else ~/.local/share/edgeexit/store)' })
        .option('trust-dir', { type: 'string', describe: 'Trust store of accepted signing keys (default: $EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust)' })
        .option('device', { type: 'string', describe: "This device's profile: the bundle must suit it (default: the bundle's target)" })
        .option('threads', { type: 'number', describe: 'Intra-op threads for the self-test' })
        .option('rollback', { type: 'boolean', describe: 'Allow a model version older than the active one' })
        .option('keep', { type: 'number', describe: 'Earlier bundles kept for rollback (default 2)' })
        .option('latency-budget-ms', { type: 'number', describe: 'Refuse when a stage takes longer than this on the golden batch here' })
        .option('memory-budget-mib', { type: 'number', describe: 'Refuse when the bundle takes more memory than this here' })
        .option('json', { type: 'boolean', describe: 'Machine-readable result' })
        .example('$0 install fmnist-branchy.tar --root /var/lib/edgeexit --device rpi4', '')
        .example('$0 install bundles/branchy-v1 --root /var/lib/edgeexit --rollback', 'go back to an older version'),
    handler: async (args: InstallCommandOptions) => {
      await installCommand(args, io);
    },
  });
}
