// `edgeexit verify-bundle <bundle|archive> [--key <public key>]`: check every file's SHA-256
// against the manifest and the manifest's signature. A failure names the file; an unsigned
// bundle is reported as such and passes unless --require-signature (or --key) asks for one.
import { verifyBundle, type VerifyResult } from '../../bundle/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { bytes, table } from '../format.js';

export interface VerifyBundleOptions {
  bundle: string;
  key?: string;
  requireSignature?: boolean;
  json?: boolean;
}

export async function verifyBundleCommand(opts: VerifyBundleOptions, io: CliIO): Promise<VerifyResult> {
  const r = await verifyBundle(opts.bundle, {
    ...(opts.key ? { publicKey: opts.key } : {}),
    ...(opts.requireSignature ? { requireSignature: true } : {}),
  });
  if (opts.json) io.out(JSON.stringify({ source: r.source, kind: r.kind, signature: r.signature, files: r.files, model: r.manifest.model, target: r.manifest.target }, null, 2));
  else io.out(renderVerify(r));
  return r;
}

export function renderVerify(r: VerifyResult): string {
  const m = r.manifest;
  const lines = [
    `bundle     ${r.source} (${r.kind}): ${m.model.name} ${m.model.version}, ${m.kind}, ${m.target.device} ${m.target.precision}, ${m.stages.length} stage${m.stages.length === 1 ? '' : 's'}`,
    table(
      ['file', 'bytes', 'sha256', 'ok'],
      r.files.map((f) => [f.file, bytes(f.bytes), f.sha256.slice(0, 16) + '…', f.ok ? 'ok' : 'MISMATCH']),
    ),
  ];
  const sig =
    r.signature.status === 'valid'
      ? `valid (key ${r.signature.keyId})`
      : r.signature.status === 'unchecked'
        ? 'present but not checked (pass --key <public key>)'
        : 'unsigned (no manifest.sig)';
  lines.push(`signature  ${sig}`);
  lines.push(`result     OK: every file matches the manifest${r.signature.status === 'valid' ? ' and the signature is valid' : ''}`);
  return lines.join('\n');
}

export function verifyBundleModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder, or a .tar made by `edgeexit pack`', demandOption: true })
        .option('key', { type: 'string', describe: 'ed25519 public key (PEM); the bundle must then be signed with its private key' })
        .option('require-signature', { type: 'boolean', describe: 'Fail when the bundle is unsigned or the signature is not checked' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 verify-bundle build/branchy-rpi4 --key keys/fleet.pub', ''),
    handler: async (args: VerifyBundleOptions) => {
      await verifyBundleCommand(args, io);
    },
  });
}
