// `edgeexit verify-bundle <bundle|archive> [--key <public key>]`: check every file's SHA-256
// against the manifest and the manifest's signature, against --key or else the trust store
// (--trust-dir, as `run` and `agent` use it). A failure names the file.
//
// It answers the question a device will ask, so a bundle whose signature cannot be checked
// (unsigned, or signed with a key not trusted here) fails (exit 2) unless --allow-unsigned; with
// it, the hashes are checked and the output says plainly that the signature was NOT checked. A
// script doing `verify-bundle b && flash b` never passes a bundle the devices will refuse.
import { defaultTrustDir, loadTrustStore, verifyBundle, type VerifyResult } from '../../bundle/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { bytes, table } from '../format.js';

export interface VerifyBundleOptions {
  bundle: string;
  key?: string;
  /** The default now; kept for scripts. Wins over allowUnsigned. */
  requireSignature?: boolean;
  trustDir?: string;
  allowUnsigned?: boolean;
  json?: boolean;
}

export async function verifyBundleCommand(opts: VerifyBundleOptions, io: CliIO): Promise<VerifyResult> {
  const r = await verifyBundle(opts.bundle, {
    ...(opts.key ? { publicKey: opts.key } : {}),
    trust: await loadTrustStore(opts.trustDir ?? defaultTrustDir()),
    requireSignature: opts.requireSignature === true || opts.allowUnsigned !== true,
  });
  if (opts.json) io.out(JSON.stringify({ source: r.source, kind: r.kind, signature: r.signature, files: r.files, model: r.manifest.model, target: r.manifest.target }, null, 2));
  else io.out(renderVerify(r));
  return r;
}

/** The signature line: which key checked it, or plainly that it was NOT checked and why. */
export function describeSignature(s: VerifyResult['signature']): string {
  if (s.status === 'valid') return `valid (key ${s.keyId}, trusted by ${s.trustedBy})`;
  if (s.status === 'unsigned') return 'NOT checked: unsigned (no manifest.sig)';
  return `NOT checked: ${s.reason}`;
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
  lines.push(`signature  ${describeSignature(r.signature)}`);
  lines.push(
    r.signature.status === 'valid'
      ? 'result     OK: every file matches the manifest and the signature is valid'
      : 'result     HASHES OK, SIGNATURE NOT CHECKED: every file matches the manifest, but nothing says who made it (--allow-unsigned)',
  );
  return lines.join('\n');
}

export function verifyBundleModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder, or a .tar made by `edgeexit pack`', demandOption: true })
        .option('key', { type: 'string', describe: 'ed25519 public key (PEM); the bundle must then be signed with its private key (instead of the trust store)' })
        .option('require-signature', { type: 'boolean', describe: 'Fail when the signature is not checked (the default; kept for scripts)' })
        .option('trust-dir', { type: 'string', describe: 'Trust store of accepted signing keys (default: $EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust)' })
        .option('allow-unsigned', { type: 'boolean', describe: 'Check the hashes only when the signature cannot be checked (exit 0, says so)' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 verify-bundle build/branchy-rpi4', 'against the trust store')
        .example('$0 verify-bundle build/branchy-rpi4 --key keys/fleet.pub', ''),
    handler: async (args: VerifyBundleOptions) => {
      await verifyBundleCommand(args, io);
    },
  });
}
