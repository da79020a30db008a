// Who may speak for which device: per-device Mosquitto credentials and the topic ACL that binds a
// credential to its own topics. A device logs in as `<fleet>/<device>`, so one ACL pattern
// (`edgeexit/v1/%u/metrics`, Mosquitto substitutes the username for %u as whole topic levels)
// gives every device its own two levels and nothing else, and enrolling a device never edits the
// ACL. Collectors log in under a name without "/" and get one `user` block each that reads the
// whole namespace. The password file uses Mosquitto's own hash format (PBKDF2-HMAC-SHA512, `$7$`)
// so a stock broker reads it; passwords are never stored in clear.
import { pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { TOPIC_ROOT, checkId } from '../telemetry/payloads.js';
import { FILES_ROOT } from '../agent/file-protocol.js';
import { InputError, formatProblem, show } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

/** The files `edgeexit fleet broker-config` and `fleet enroll` keep in one folder. */
export const BROKER_FILES = { conf: 'mosquitto.conf', acl: 'acl', passwd: 'passwd', operators: 'operators' } as const;
export const DEFAULT_BROKER_DIR = 'mosquitto';
export const DEFAULT_BROKER_LISTEN = { host: '127.0.0.1', port: 1883 } as const;

// What mosquitto_passwd writes by default: 12 random salt bytes, 101 iterations, 64-byte digest.
// More iterations would cost the broker that much CPU on every connect of every device.
const PBKDF2_ITERATIONS = 101;
const SALT_BYTES = 12;
const DIGEST_BYTES = 64;

// Same rule as fleet and device ids (topic-safe, no ":" for the password file, no "/" so a
// collector can never be mistaken for a device's `<fleet>/<device>` username).
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * A credential holder: a device (username `<fleet>/<device>`), a collector or an operator (plain
 * names; operators are listed in `<dir>/operators`, since the password file has no room for a role).
 */
export type Principal = { kind: 'device'; fleet: string; device: string } | { kind: 'collector'; name: string } | { kind: 'operator'; name: string };

/**
 * The MQTT username of a principal.
 *
 * @example
 * ```ts
 * import { usernameOf } from 'edgeexit/fleet';
 * usernameOf({ kind: 'device', fleet: 'lab', device: 'pi-07' }); // 'lab/pi-07'
 * ```
 */
export function usernameOf(p: Principal): string {
  return p.kind === 'device' ? `${p.fleet}/${p.device}` : p.name;
}

/**
 * `<fleet>/<device>` as typed on the command line, checked as topic-safe ids.
 *
 * @example
 * ```ts
 * import { parseDeviceRef } from 'edgeexit/fleet';
 * parseDeviceRef('lab/pi-07'); // { kind: 'device', fleet: 'lab', device: 'pi-07' }
 * ```
 */
export function parseDeviceRef(ref: string): Principal {
  const parts = ref.split('/');
  if (parts.length !== 2)
    throw new InputError(formatProblem({ where: 'device', expected: '<fleet>/<device>, e.g. lab/pi-07', got: show(ref), fix: 'name the fleet and the device id, separated by one "/"' }));
  const [fleet, device] = parts as [string, string];
  checkId('fleet', fleet);
  checkId('device', device);
  return { kind: 'device', fleet, device };
}

/**
 * A collector's username, checked: an id without "/" (devices have one).
 *
 * @example
 * ```ts
 * import { collectorPrincipal, enrol } from 'edgeexit/fleet';
 * await enrol('mosquitto', collectorPrincipal('collector-1'));
 * ```
 */
export function collectorPrincipal(name: string): Principal {
  if (!NAME_RE.test(name))
    throw new InputError(formatProblem({ where: '--collector', expected: '1–64 characters [A-Za-z0-9._-] starting with a letter or digit', got: show(name), fix: 'pick a plain name such as collector-1' }));
  return { kind: 'collector', name };
}

/**
 * An operator's username, checked like a collector's: it may publish flash jobs and read job states.
 *
 * @example
 * ```ts
 * import { enrol, operatorPrincipal } from 'edgeexit/fleet';
 * await enrol('mosquitto', operatorPrincipal('ops'));
 * ```
 */
export function operatorPrincipal(name: string): Principal {
  if (!NAME_RE.test(name))
    throw new InputError(formatProblem({ where: '--operator', expected: '1–64 characters [A-Za-z0-9._-] starting with a letter or digit', got: show(name), fix: 'pick a plain name such as ops' }));
  return { kind: 'operator', name };
}

async function readOperators(dir: string): Promise<string[]> {
  const text = await fsp.readFile(path.join(dir, BROKER_FILES.operators), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  return text.split('\n').map((l) => l.trim()).filter((l) => NAME_RE.test(l));
}

/** Add or drop `who` in the operators list when it is an operator (before the ACL is rewritten). */
async function updateOperators(dir: string, who: Principal, add: boolean): Promise<void> {
  if (who.kind !== 'operator') return;
  const names = (await readOperators(dir)).filter((n) => n !== who.name);
  if (add) names.push(who.name);
  await writeFileAtomic(path.join(dir, BROKER_FILES.operators), names.map((n) => n + '\n').join(''), { mode: 0o644 });
}

/**
 * Mosquitto's password hash (`$7$<iterations>$<salt base64>$<PBKDF2-HMAC-SHA512 base64>`), the
 * format `mosquitto_passwd` writes and Mosquitto 2 checks on CONNECT.
 *
 * @example
 * ```ts
 * import { mosquittoPasswordHash } from 'edgeexit/fleet';
 * const line = `lab/pi-07:${mosquittoPasswordHash('s3cret')}`;
 * ```
 */
export function mosquittoPasswordHash(password: string, opts: { salt?: Buffer; iterations?: number } = {}): string {
  const salt = opts.salt ?? randomBytes(SALT_BYTES);
  const iterations = opts.iterations ?? PBKDF2_ITERATIONS;
  const digest = pbkdf2Sync(password, salt, iterations, DIGEST_BYTES, 'sha512');
  return `$7$${iterations}$${salt.toString('base64')}$${digest.toString('base64')}`;
}

/**
 * Whether `password` matches a `$7$` hash (the check the broker makes; for tests and tooling).
 *
 * @example
 * ```ts
 * import { mosquittoPasswordHash, verifyMosquittoPassword } from 'edgeexit/fleet';
 * verifyMosquittoPassword('s3cret', mosquittoPasswordHash('s3cret')); // true
 * ```
 */
export function verifyMosquittoPassword(password: string, hash: string): boolean {
  const m = /^\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash);
  if (!m) return false;
  const want = Buffer.from(m[3]!, 'base64');
  const got = pbkdf2Sync(password, Buffer.from(m[2]!, 'base64'), Number(m[1]), want.length, 'sha512');
  return want.length > 0 && timingSafeEqual(want, got);
}

/**
 * A fresh random password: 24 bytes as base64url (32 characters, safe unquoted in a shell).
 *
 * @example
 * ```ts
 * import { newPassword } from 'edgeexit/fleet';
 * newPassword().length; // 32
 * ```
 */
export function newPassword(): string {
  return randomBytes(24).toString('base64url');
}

interface PasswordFile {
  /** Lines as read; user lines are replaced or dropped in place, others kept as they were. */
  lines: string[];
  exists: boolean;
  mode: number;
  owner?: { uid: number; gid: number };
}

async function readPasswordFile(file: string): Promise<PasswordFile> {
  let text: string;
  let st;
  try {
    [text, st] = await Promise.all([fsp.readFile(file, 'utf8'), fsp.stat(file)]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { lines: [], exists: false, mode: 0o600 };
    throw new InputError(formatProblem({ where: file, message: `cannot read the password file: ${(err as Error).message}`, fix: 'run as a user that can read it' }), [], { cause: err });
  }
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return { lines, exists: true, mode: st.mode & 0o777, owner: { uid: st.uid, gid: st.gid } };
}

function userOf(line: string): string | undefined {
  if (line.trim() === '' || line.startsWith('#')) return undefined;
  const i = line.indexOf(':');
  return i < 0 ? undefined : line.slice(0, i);
}

async function writePasswordFile(file: string, pf: PasswordFile, lines: string[]): Promise<void> {
  await writeFileAtomic(file, lines.length ? lines.join('\n') + '\n' : '', { mode: pf.mode, ...(pf.owner ? { owner: pf.owner } : {}) });
}

/**
 * Usernames in a password file (missing file: none).
 *
 * @example
 * ```ts
 * import { passwordFileUsers } from 'edgeexit/fleet';
 * await passwordFileUsers('mosquitto/passwd'); // ['collector', 'lab/pi-07']
 * ```
 */
export async function passwordFileUsers(file: string): Promise<string[]> {
  return (await readPasswordFile(file)).lines.map(userOf).filter((u): u is string => u !== undefined);
}

export interface EnrolResult {
  username: string;
  /** In clear, once: only its hash is written. */
  password: string;
  passwordFile: string;
  aclFile: string;
  /** An existing credential was replaced (the old password stops working at the broker's next reload). */
  rotated: boolean;
}

/**
 * Issue a credential: add `<username>:<hash>` to `<dir>/passwd` (temp file, fsync, rename; the
 * file's mode and owner are kept, a new one is 0600) and rewrite `<dir>/acl` so collectors keep
 * their read access. An existing username is refused unless `rotate` is set.
 *
 * @example
 * ```ts
 * import { enrol, parseDeviceRef } from 'edgeexit/fleet';
 * const { username, password } = await enrol('mosquitto', parseDeviceRef('lab/pi-07'));
 * ```
 */
export async function enrol(dir: string, who: Principal, opts: { rotate?: boolean; password?: string } = {}): Promise<EnrolResult> {
  const passwordFile = path.join(dir, BROKER_FILES.passwd);
  const username = usernameOf(who);
  const pf = await readPasswordFile(passwordFile);
  const at = pf.lines.findIndex((l) => userOf(l) === username);
  if (at >= 0 && !opts.rotate)
    throw new InputError(formatProblem({ where: passwordFile, message: `${username} is already enrolled`, fix: 'pass --rotate to issue a new password (the old one stops working), or `edgeexit fleet revoke` it' }));
  const password = opts.password ?? newPassword();
  const line = `${username}:${mosquittoPasswordHash(password)}`;
  const lines = at >= 0 ? pf.lines.map((l, i) => (i === at ? line : l)) : [...pf.lines, line];
  await writePasswordFile(passwordFile, pf, lines);
  await updateOperators(dir, who, true);
  const aclFile = await writeAcl(dir, lines);
  return { username, password, passwordFile, aclFile, rotated: at >= 0 };
}

/**
 * Remove a credential from `<dir>/passwd` (and a collector's block from the ACL). Returns false
 * when it was not there. It applies when the broker reloads its files (SIGHUP); Mosquitto 2 then
 * also disconnects a client whose credential is gone (tested).
 *
 * @example
 * ```ts
 * import { parseDeviceRef, revoke } from 'edgeexit/fleet';
 * await revoke('mosquitto', parseDeviceRef('lab/pi-07')); // then: kill -HUP <mosquitto pid>
 * ```
 */
export async function revoke(dir: string, who: Principal): Promise<boolean> {
  const passwordFile = path.join(dir, BROKER_FILES.passwd);
  const username = usernameOf(who);
  const pf = await readPasswordFile(passwordFile);
  const lines = pf.lines.filter((l) => userOf(l) !== username);
  if (lines.length === pf.lines.length) return false;
  await writePasswordFile(passwordFile, pf, lines);
  await updateOperators(dir, who, false);
  await writeAcl(dir, lines);
  return true;
}

// Operator services (the same usernames as collectors) may run the file server: read every
// device's file requests and answer on the reply topics (the server answers only the requester's).
const FILE_SERVER_LINES = [`topic read ${FILES_ROOT}/+/+/get`, `topic write ${FILES_ROOT}/+/+/reply`];

/**
 * The acl_file: collectors (usernames without "/") read everything under the namespace and write
 * acks; a device (`<fleet>/<device>`) writes its own birth, death and metrics, reads its own ack
 * and job topics, and requests files on its own topic and reads its own replies (collectors may serve them);
 * nothing else is granted, so nobody else writes (Mosquitto denies what no line allows).
 *
 * @example
 * ```ts
 * import { renderAcl } from 'edgeexit/fleet';
 * renderAcl(['collector']).includes('pattern write edgeexit/v1/%u/metrics'); // true
 * ```
 */
export function renderAcl(collectors: readonly string[], operators: readonly string[] = []): string {
  const users = collectors.flatMap((c) => [`user ${c}`, `topic read ${TOPIC_ROOT}/#`, `topic write ${TOPIC_ROOT}/+/+/ack`, ...FILE_SERVER_LINES, '']);
  const ops = operators.flatMap((o) => [
    `user ${o}`,
    `topic readwrite ${TOPIC_ROOT}/+/+/job/desired`,
    `topic read ${TOPIC_ROOT}/+/+/job/state`,
    ...FILE_SERVER_LINES,
    '',
  ]);
  return [
    '# Written by edgeexit (`fleet broker-config`, `fleet enroll`, `fleet revoke`); rewritten on each, so edit',
    '# the generator, not this file. See docs/security.md, "MQTT: who can publish and read what".',
    '# No topic lines before the first `user`: anonymous clients get nothing (and allow_anonymous is false).',
    '',
    '# Collectors: read every fleet; write only the acks of stored windows (a device drops a window on its ack).',
    ...users,
    '# Operators: publish (retained, signed) flash jobs, read what devices report, serve bundle files.',
    ...ops,
    '# Devices log in as <fleet>/<device>; %u stands for those two topic levels. Pattern lines apply to',
    '# every user, but only a <fleet>/<device> username yields a telemetry topic.',
    `pattern write ${TOPIC_ROOT}/%u/birth`,
    `pattern write ${TOPIC_ROOT}/%u/death`,
    `pattern write ${TOPIC_ROOT}/%u/metrics`,
    `pattern read ${TOPIC_ROOT}/%u/ack`,
    `pattern read ${TOPIC_ROOT}/%u/job/#`,
    '# A device reports its own job state; nobody but an operator writes job/desired.',
    `pattern write ${TOPIC_ROOT}/%u/job/state`,
    '# Bundle transfer: a device asks for files on its own request topic and reads only its own replies.',
    `pattern write ${FILES_ROOT}/%u/get`,
    `pattern read ${FILES_ROOT}/%u/reply`,
    '',
  ].join('\n');
}

async function writeAcl(dir: string, passwdLines: readonly string[]): Promise<string> {
  const users = passwdLines.map(userOf).filter((u): u is string => u !== undefined && !u.includes('/'));
  const listed = new Set(await readOperators(dir));
  const file = path.join(dir, BROKER_FILES.acl);
  await writeFileAtomic(file, renderAcl(users.filter((u) => !listed.has(u)), users.filter((u) => listed.has(u))), { mode: 0o644 });
  return file;
}

export interface BrokerConfigOptions {
  /** Plain MQTT listener (default 127.0.0.1:1883: this machine only; see the TLS lines for others). */
  listen?: { host: string; port: number };
}

/**
 * mosquitto.conf for the fleet: no anonymous clients, the password file and ACL next to it, a
 * loopback listener, and commented-out TLS lines for devices on other machines.
 *
 * @example
 * ```ts
 * import { renderMosquittoConf } from 'edgeexit/fleet';
 * renderMosquittoConf('/etc/mosquitto/edgeexit', { listen: { host: '127.0.0.1', port: 1884 } });
 * ```
 */
export function renderMosquittoConf(dir: string, opts: BrokerConfigOptions = {}): string {
  const abs = path.resolve(dir);
  const listen = opts.listen ?? DEFAULT_BROKER_LISTEN;
  return [
    '# Mosquitto for an edgeexit fleet, written by `edgeexit fleet broker-config`. Credentials come from',
    '# `edgeexit fleet enroll`; reload the broker after each enrol or revoke: kill -HUP <pid> (or systemctl',
    '# reload mosquitto). Who may publish and read what: docs/security.md.',
    'per_listener_settings false',
    'allow_anonymous false',
    `password_file ${path.join(abs, BROKER_FILES.passwd)}`,
    `acl_file ${path.join(abs, BROKER_FILES.acl)}`,
    '# Bundle transfer is request/response: without this, each reply waits on a delayed ACK (Nagle).',
    'set_tcp_nodelay true',
    '',
    '# Plain MQTT: passwords cross the network in clear, so keep it on loopback (or a private link).',
    `listener ${listen.port} ${listen.host}`,
    '',
    '# Devices on other machines: a TLS listener (certificates from your CA; see docs/security.md).',
    '#listener 8883 0.0.0.0',
    '#certfile /etc/mosquitto/certs/broker.crt',
    '#keyfile /etc/mosquitto/certs/broker.key',
    '#cafile /etc/mosquitto/certs/ca.crt',
    '#tls_version tlsv1.2',
    '',
  ].join('\n');
}

/**
 * Write `<dir>/mosquitto.conf` and `<dir>/acl`, and an empty `<dir>/passwd` when there is none
 * (existing credentials are kept). Returns the paths written.
 *
 * @example
 * ```ts
 * import { writeBrokerConfig } from 'edgeexit/fleet';
 * await writeBrokerConfig('mosquitto'); // then: mosquitto -c mosquitto/mosquitto.conf
 * ```
 */
export async function writeBrokerConfig(dir: string, opts: BrokerConfigOptions = {}): Promise<{ conf: string; acl: string; passwd: string }> {
  const passwd = path.join(dir, BROKER_FILES.passwd);
  const pf = await readPasswordFile(passwd);
  if (!pf.exists) await writePasswordFile(passwd, pf, []);
  const conf = path.join(dir, BROKER_FILES.conf);
  await writeFileAtomic(conf, renderMosquittoConf(dir, opts), { mode: 0o644 });
  const acl = await writeAcl(dir, pf.lines);
  return { conf, acl, passwd };
}
