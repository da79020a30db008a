// `edgeexit keygen --out <prefix>`: an ed25519 key pair for signing bundles (`compile --key`)
// and checking them (`verify-bundle --key`, devices).
import { generateKeyPair, type KeyPairFiles } from '../../bundle/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';

export interface KeygenOptions {
  out: string;
  force?: boolean;
  json?: boolean;
}

export async function keygenCommand(opts: KeygenOptions, io: CliIO): Promise<KeyPairFiles> {
  const r = await generateKeyPair(opts.out, { force: opts.force ?? false });
  if (opts.json) io.out(JSON.stringify(r, null, 2));
  else {
    io.out(
      [
        `private key  ${r.privateKey} (mode 0600: keep it secret; compile --key uses it)`,
        `public key   ${r.publicKey} (give it to devices and to verify-bundle --key)`,
        `key id       ${r.keyId}`,
      ].join('\n'),
    );
  }
  return r;
}

export function keygenModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('out', { type: 'string', describe: 'Path prefix of the key files', demandOption: true })
        .option('force', { type: 'boolean', describe: 'Overwrite existing key files' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 keygen --out keys/fleet', 'writes keys/fleet.key and keys/fleet.pub'),
    handler: async (args: KeygenOptions) => {
      await keygenCommand(args, io);
    },
  });
}
