// `edgeexit pack <bundle> --out x.tar`: one file to copy or flash. The bundle is verified first
// (hashes only; the signature travels inside), so a damaged bundle is never packed.
import { packBundle } from '../../bundle/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { bytes } from '../format.js';

export interface PackOptions {
  bundle: string;
  out: string;
  json?: boolean;
}

export async function packCommand(opts: PackOptions, io: CliIO): Promise<{ file: string; bytes: number; entries: string[] }> {
  const r = await packBundle(opts.bundle, opts.out);
  const summary = { file: r.file, bytes: r.bytes, entries: r.entries, signature: r.verified.signature.status === 'unsigned' ? 'unsigned' : 'signed' };
  if (opts.json) io.out(JSON.stringify(summary, null, 2));
  else io.out(`packed  ${opts.bundle} → ${r.file} (${bytes(r.bytes)}, ${r.entries.length} files: ${r.entries.join(', ')}; ${summary.signature})`);
  return { file: r.file, bytes: r.bytes, entries: r.entries };
}

export function packModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder made by `edgeexit compile`', demandOption: true })
        .option('out', { type: 'string', describe: 'Archive to write, e.g. branchy-rpi4.tar', demandOption: true })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 pack build/branchy-rpi4 --out branchy-rpi4.tar', ''),
    handler: async (args: PackOptions) => {
      await packCommand(args, io);
    },
  });
}
