// `edgeexit pack <bundle> --out x.tar`: one file to copy or flash. The bundle is verified first,
// so a damaged bundle is never packed; the signature travels inside. Pack runs where bundles are
// built, which need not trust the fleet's key, so an unchecked signature does not stop it, but
// the output calls the bundle "signed" only when its signature verified against --key or a key
// in the trust store; a bad or revoked signature stops the pack.
import { defaultTrustDir, loadTrustStore, packBundle } from '../../bundle/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { bytes } from '../format.js';
import { describeSignature } from './verify-bundle.js';

export interface PackOptions {
  bundle: string;
  out: string;
  key?: string;
  trustDir?: string;
  json?: boolean;
}

export async function packCommand(opts: PackOptions, io: CliIO): Promise<{ file: string; bytes: number; entries: string[] }> {
  const r = await packBundle(opts.bundle, opts.out, {
    ...(opts.key ? { publicKey: opts.key } : {}),
    trust: await loadTrustStore(opts.trustDir ?? defaultTrustDir()),
  });
  const s = r.verified.signature;
  const signature = s.status === 'valid' ? `signed, ${describeSignature(s)}` : `signature ${describeSignature(s)}`;
  if (opts.json) io.out(JSON.stringify({ file: r.file, bytes: r.bytes, entries: r.entries, signature: s }, null, 2));
  else io.out(`packed  ${opts.bundle} → ${r.file} (${bytes(r.bytes)}, ${r.entries.length} files: ${r.entries.join(', ')}; ${signature})`);
  return { file: r.file, bytes: r.bytes, entries: r.entries };
}

export function packModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder made by `edgeexit compile`', demandOption: true })
        .option('out', { type: 'string', describe: 'Archive to write, e.g. branchy-rpi4.tar', demandOption: true })
        .option('key', { type: 'string', describe: 'Public key (PEM) to check the signature with (instead of the trust store)' })
        .option('trust-dir', { type: 'string', describe: 'Trust store of accepted signing keys (default: $EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust)' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 pack build/branchy-rpi4 --out branchy-rpi4.tar --key keys/fleet.pub', ''),
    handler: async (args: PackOptions) => {
      await packCommand(args, io);
    },
  });
}
