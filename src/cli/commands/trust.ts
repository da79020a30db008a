// `edgeexit trust add|list|revoke`: the device's trust store of bundle-signing keys (layout in
// src/bundle/trust.ts). `run`, `agent` and `verify-bundle` accept a bundle only when it is signed
// with one of these keys (or with --key). Rotation: add the new key, re-sign and roll out, then
// revoke the old one; revocation is kept in a list, so a key stays refused even if its .pub
// comes back.
import { addTrustedKey, defaultTrustDir, loadTrustStore, resolveKeyId, revokeKey, type TrustStore } from '../../bundle/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { table } from '../format.js';

interface TrustCommon {
  trustDir?: string;
  json?: boolean;
}

export interface TrustAddOptions extends TrustCommon {
  key: string;
}

export interface TrustRevokeOptions extends TrustCommon {
  key: string;
  note?: string;
}

const dirOf = (o: TrustCommon): string => o.trustDir ?? defaultTrustDir();

export async function trustAddCommand(opts: TrustAddOptions, io: CliIO): Promise<{ keyId: string; file: string; added: boolean }> {
  const r = await addTrustedKey(dirOf(opts), opts.key);
  if (opts.json) io.out(JSON.stringify(r, null, 2));
  else io.out(`${r.added ? 'trusted' : 'already trusted'}  ${r.keyId} (${r.file})`);
  return r;
}

export async function trustListCommand(opts: TrustCommon, io: CliIO): Promise<TrustStore> {
  const s = await loadTrustStore(dirOf(opts));
  if (opts.json) {
    io.out(JSON.stringify({ dir: s.dir, exists: s.exists, keys: s.keys.map((k) => ({ keyId: k.keyId, file: k.file })), revoked: s.revoked }, null, 2));
    return s;
  }
  io.out(renderTrustStore(s));
  return s;
}

export function renderTrustStore(s: TrustStore): string {
  const revoked = new Set(s.revoked.map((r) => r.keyId));
  const rows = [
    ...s.keys.map((k) => [k.keyId, revoked.has(k.keyId) ? 'REVOKED (its .pub is still here)' : 'trusted', k.file]),
    ...s.revoked.filter((r) => !s.keys.some((k) => k.keyId === r.keyId)).map((r) => [r.keyId, 'revoked', r.note ?? '']),
  ];
  const head = `trust store ${s.dir}${s.exists ? '' : ' (no such folder: nothing is trusted)'}`;
  if (rows.length === 0) return `${head}\nno keys: devices refuse every bundle (add one with \`edgeexit trust add <key.pub>\`)`;
  return `${head}\n${table(['key id', 'status', 'file / note'], rows)}`;
}

export async function trustRevokeCommand(opts: TrustRevokeOptions, io: CliIO): Promise<{ keyId: string; removed: string[]; already: boolean }> {
  const id = await resolveKeyId(opts.key);
  const r = await revokeKey(dirOf(opts), id, opts.note);
  if (opts.json) io.out(JSON.stringify(r, null, 2));
  else io.out(`${r.already ? 'already revoked' : 'revoked'}  ${r.keyId}${r.removed.length ? ` (removed ${r.removed.join(', ')})` : ''}`);
  return r;
}

const TRUST_COMMON = {
  'trust-dir': { type: 'string', describe: 'Trust store folder (default: $EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust)' },
  json: { type: 'boolean', describe: 'Machine-readable output' },
} as const;

function trustAddModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) => y.positional('key', { type: 'string', describe: 'Public key file (PEM)', demandOption: true }).options(TRUST_COMMON),
    handler: async (args: TrustAddOptions) => {
      await trustAddCommand(args, io);
    },
  });
}

function trustListModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) => y.options(TRUST_COMMON),
    handler: async (args: TrustCommon) => {
      await trustListCommand(args, io);
    },
  });
}

function trustRevokeModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('key', { type: 'string', describe: 'Key id (sha256:…, as `trust list` shows it) or its .pub file', demandOption: true })
        .option('note', { type: 'string', describe: 'Why, kept next to the id (e.g. "leaked 2026-12-01")' })
        .options(TRUST_COMMON),
    handler: async (args: TrustRevokeOptions) => {
      await trustRevokeCommand(args, io);
    },
  });
}

export function trustModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .command({ command: 'add <key>', describe: 'Trust a public key (.pub from `edgeexit keygen`) for bundle signatures', ...trustAddModule(io) })
        .command({ command: 'list', describe: 'List trusted and revoked key ids', ...trustListModule(io) })
        .command({ command: 'revoke <key>', describe: 'Refuse a key id from now on (even if its .pub is present) and remove its .pub', ...trustRevokeModule(io) })
        .demandCommand(1, 'Name a trust subcommand, e.g. `edgeexit trust list`.')
        .example('$0 trust add keys/fleet.pub', '')
        .example('$0 trust revoke sha256:3f…', ''),
    // The subcommand's handler does the work; `trust` alone is refused by demandCommand.
    handler: async (_args: object) => undefined,
  });
}
