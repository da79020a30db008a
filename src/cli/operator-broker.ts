// The broker flags an operator command takes (flash, jobs, rollout, recalibrate), and what they
// open: a connection as the operator, and the file server that answers devices' block requests.
import { startFileServer, type FileServer } from '../fleet/file-server.js';
import { connectMqtt, type MqttConnection } from '../telemetry/mqtt/client.js';
import { readTls } from '../telemetry/device.js';
import { InputError, formatProblem } from '../util/errors.js';

export interface BrokerFlags {
  broker: string;
  username?: string;
  password?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export const BROKER_OPTIONS = {
  broker: { type: 'string', describe: 'The fleet broker (MQTT 5 for file transfer: Mosquitto)', demandOption: true },
  username: { type: 'string', describe: 'MQTT user name (an operator: `edgeexit fleet enroll --operator <name>`)' },
  password: { type: 'string', describe: 'MQTT password (or set EDGEEXIT_MQTT_PASSWORD, which `ps` does not show)' },
  'tls-ca': { type: 'string', describe: 'PEM CA the broker certificate must chain to' },
  'tls-cert': { type: 'string', describe: 'PEM client certificate' },
  'tls-key': { type: 'string', describe: 'PEM client key' },
} as const;

/** User name and password from the flags (the password from EDGEEXIT_MQTT_PASSWORD when not given). */
function credentials(o: BrokerFlags): { username?: string; password?: string } {
  const password = o.password ?? process.env.EDGEEXIT_MQTT_PASSWORD;
  return { ...(o.username !== undefined ? { username: o.username } : {}), ...(password !== undefined ? { password } : {}) };
}

/**
 * Connect to the fleet broker as the operator; `role` names the client id (`edgeexit-<role>-…`).
 *
 * @example
 * ```ts
 * const conn = await connectOperator({ broker: 'mqtt://127.0.0.1:1883', username: 'ops' }, 'jobs');
 * await conn.end();
 * ```
 */
export async function connectOperator(o: BrokerFlags, role: string): Promise<MqttConnection> {
  if (typeof o.broker !== 'string') throw new InputError(formatProblem({ where: '--broker', expected: 'the fleet broker URL', got: 'nothing', fix: 'add --broker mqtt://host:1883' }));
  const tls = await readTls({ ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey });
  return connectMqtt({
    url: o.broker,
    clientId: `edgeexit-${role}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    connectTimeoutMs: 10_000,
    ...credentials(o),
    ...(tls ? { tls } : {}),
  });
}

/**
 * Serve the content-addressed files in `dir` to devices while a command runs.
 *
 * @example
 * ```ts
 * const server = await serveOperatorFiles({ broker: 'mqtt://127.0.0.1:1883' }, 'edgeexit-files', console.error);
 * await server.close();
 * ```
 */
export function serveOperatorFiles(o: BrokerFlags, dir: string, onLog: (line: string) => void): Promise<FileServer> {
  return startFileServer({ brokerUrl: o.broker, bundles: [], blobDirs: [dir], ...credentials(o), onLog });
}
