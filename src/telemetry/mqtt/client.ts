// The one adapter around MQTT.js. It hands the rest of the code a single connection attempt with
// promise-based publish (resolved on PUBACK for QoS 1) and no hidden behaviour: MQTT.js's own
// reconnect and offline queue are switched off, because a reconnect must carry a new last will
// (new bdSeq) and resending is the outbox's job, not an in-memory store that dies with the process.
import type { IClientOptions, MqttClient } from 'mqtt';
import { EdgeExitError } from '../../util/errors.js';

export interface MqttTls {
  /** PEM CA bundle to trust (a private broker CA). */
  ca?: string | Buffer;
  /** Client certificate and key, for brokers that authenticate devices by certificate. */
  cert?: string | Buffer;
  key?: string | Buffer;
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface MqttConnectOptions {
  /** mqtt://, mqtts://, ws:// or wss:// URL. */
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  tls?: MqttTls;
  will?: { topic: string; payload: Buffer; qos: 0 | 1; retain?: boolean };
  /**
   * 4 (3.1.1), 5, or 'auto' (default): MQTT 5, and 3.1.1 when the broker refuses 5's CONNECT as an
   * unsupported protocol version (brokers that only speak 3.1.1, such as `collect`'s embedded one).
   */
  protocolVersion?: 4 | 5 | 'auto';
  keepaliveS?: number;
  connectTimeoutMs?: number;
  /** Keep the session on the broker (subscribers that must not miss messages while away). */
  persistentSession?: boolean;
  /** MQTT 5: the largest packet this client takes; the broker sends nothing larger (a device's limit). */
  maximumPacketSize?: number;
  /** Attached before CONNACK, so messages a resumed session delivers at once are not missed. */
  onMessage?: (m: MqttMessage) => void;
  /**
   * Called for each received message after onMessage and before its PUBACK is sent (the PUBACK
   * waits for it to return, or for the promise it returns to settle): a subscriber that must store
   * a message before the broker forgets it does so here. It must not throw (the PUBACK is sent
   * regardless).
   */
  beforeAck?: (m: MqttMessage) => void | Promise<void>;
}

export interface MqttMessage {
  topic: string;
  payload: Buffer;
  retain: boolean;
  /** MQTT 5 request/response properties, when the sender set them (file transfer uses them). */
  properties?: MqttProperties;
}

/** The MQTT 5 properties edgeexit uses: request/response (response topic, correlation data) and user properties. */
export interface MqttProperties {
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: Record<string, string>;
}

function propertiesOf(packet: { properties?: { responseTopic?: string; correlationData?: Buffer; userProperties?: Record<string, string | string[]> } }): MqttProperties | undefined {
  const p = packet.properties;
  if (!p) return undefined;
  const out: MqttProperties = {};
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) out.correlationData = p.correlationData;
  if (p.userProperties) {
    // A repeated key arrives as a list; the last value wins, so a reader sees one string per key.
    out.userProperties = Object.fromEntries(Object.entries(p.userProperties).map(([k, v]) => [k, Array.isArray(v) ? String(v.at(-1)) : v]));
  }
  return out;
}

function messageOf(topic: string, payload: Buffer, packet: { retain: boolean; properties?: Parameters<typeof propertiesOf>[0]['properties'] }): MqttMessage {
  const properties = propertiesOf(packet);
  return properties ? { topic, payload, retain: packet.retain, properties } : { topic, payload, retain: packet.retain };
}

/**
 * The broker or the connection failed; the caller decides whether to retry.
 *
 * @example
 * ```ts
 * import { MqttConnectionError, connectMqtt } from 'edgeexit/telemetry';
 * try {
 *   await connectMqtt({ url: 'mqtt://broker.local', clientId: 'probe', connectTimeoutMs: 2_000 });
 * } catch (err) {
 *   if (err instanceof MqttConnectionError) console.error(`broker unreachable: ${err.message}`);
 * }
 * ```
 */
export class MqttConnectionError extends EdgeExitError {}

export interface MqttConnection {
  readonly clientId: string;
  /** The protocol this connection speaks (what 'auto' settled on). */
  readonly protocolVersion: 4 | 5;
  /** MQTT 5: the largest packet the broker accepts, from its CONNACK; undefined when it sets no limit. */
  readonly brokerMaximumPacketSize: number | undefined;
  /** Resolves when the broker acknowledged (QoS 1) or the packet was written (QoS 0); rejects if the connection closes first. */
  publish(topic: string, payload: Buffer, opts?: { qos?: 0 | 1; retain?: boolean; properties?: MqttProperties }): Promise<void>;
  subscribe(filter: string, qos?: 0 | 1): Promise<void>;
  onMessage(handler: (m: MqttMessage) => void): void;
  /** Called once, when the connection is gone for whatever reason. */
  onClose(handler: (err?: Error) => void): void;
  readonly closed: boolean;
  /**
   * Clean DISCONNECT: the broker does not publish the will. `endSession` (MQTT 5) also ends a
   * persistent session, so the broker stops queueing for a client that is gone on purpose.
   */
  end(opts?: { endSession?: boolean }): Promise<void>;
  /** Drop the socket without DISCONNECT, as a crash or a cut cable would; the broker publishes the will. */
  abort(): void;
}

/**
 * True for a CONNACK that refuses the protocol level: 3.1.1's return code 1 ("unacceptable
 * protocol version", what a 3.1.1-only broker answers an MQTT 5 CONNECT with) or MQTT 5's reason
 * code 0x84 ("unsupported protocol version").
 *
 * @example await connectMqtt({ url, clientId, protocolVersion: 5 }).catch((e) => isProtocolRefusal(e)) // true on aedes
 */
export function isProtocolRefusal(err: unknown): boolean {
  const cause = err instanceof MqttConnectionError ? err.cause : err;
  const code = (cause as { code?: unknown } | undefined)?.code;
  return code === 1 || code === 0x84;
}

/**
 * Open one connection; rejects with MqttConnectionError if it is refused or times out. With
 * protocolVersion 'auto' (the default) a broker that refuses MQTT 5 gets a second CONNECT in 3.1.1.
 *
 *
 * @example
 * ```ts
 * import { connectMqtt, decodePayload, subscriptionFor } from 'edgeexit/telemetry';
 * const conn = await connectMqtt({ url: 'mqtt://broker.local:1883', clientId: 'watcher' }); // conn.protocolVersion: 5 or 4
 * conn.onMessage((m) => { if (m.topic.endsWith('/metrics')) console.log(decodePayload('metrics', m.payload).count); });
 * await conn.subscribe(subscriptionFor('lab'), 1);
 * ```
 */
export async function connectMqtt(opts: MqttConnectOptions): Promise<MqttConnection> {
  const wanted = opts.protocolVersion ?? 'auto';
  if (wanted !== 'auto') return connectAs(opts, wanted);
  try {
    return await connectAs(opts, 5);
  } catch (err) {
    if (!isProtocolRefusal(err)) throw err;
    return connectAs(opts, 4);
  }
}

async function connectAs(opts: MqttConnectOptions, protocolVersion: 4 | 5): Promise<MqttConnection> {
  // Loaded on first connect: `edgeexit run` without --telemetry never needs MQTT.
  const mqtt = (await import('mqtt')).default;
  const connectTimeout = opts.connectTimeoutMs ?? 10_000;
  const options: IClientOptions = {
    clientId: opts.clientId,
    protocolVersion,
    clean: !opts.persistentSession,
    keepalive: opts.keepaliveS ?? 30,
    connectTimeout,
    reconnectPeriod: 0,
    queueQoSZero: false,
    resubscribe: false,
  };
  if (opts.persistentSession && options.protocolVersion === 5) options.properties = { sessionExpiryInterval: 0xffffffff };
  if (opts.maximumPacketSize !== undefined && protocolVersion === 5) options.properties = { ...options.properties, maximumPacketSize: opts.maximumPacketSize };
  if (opts.username !== undefined) options.username = opts.username;
  if (opts.password !== undefined) options.password = opts.password;
  if (opts.will) options.will = { topic: opts.will.topic, payload: opts.will.payload, qos: opts.will.qos, retain: opts.will.retain ?? false };
  if (opts.tls) {
    const t = opts.tls;
    if (t.ca !== undefined) options.ca = t.ca;
    if (t.cert !== undefined) options.cert = t.cert;
    if (t.key !== undefined) options.key = t.key;
    if (t.rejectUnauthorized !== undefined) options.rejectUnauthorized = t.rejectUnauthorized;
    if (t.servername !== undefined) options.servername = t.servername;
  }
  const client = mqtt.connect(opts.url, options);
  const onMessage = opts.onMessage;
  if (onMessage) client.on('message', (topic, payload, packet) => onMessage(messageOf(topic, payload, packet)));
  const beforeAck = opts.beforeAck;
  // MQTT.js sends a QoS 1 PUBACK once handleMessage calls back (after 'message' was emitted).
  if (beforeAck)
    // MQTT.js reads the next packet only after the callback, so later messages wait too (order kept).
    client.handleMessage = (packet, callback) => {
      let pending: void | Promise<void> = undefined;
      try {
        // The payload as received (what onMessage got too), not a copy of it per message.
        if (packet.cmd === 'publish') pending = beforeAck(messageOf(packet.topic, typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload, packet));
      } finally {
        if (pending) pending.then(() => callback(), () => callback());
        else callback();
      }
    };
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      client.end(true);
      reject(new MqttConnectionError(`cannot connect to ${opts.url}: ${err.message}`, [], { cause: err }));
    };
    const timer = setTimeout(() => fail(new Error(`no CONNACK within ${connectTimeout} ms`)), connectTimeout + 500);
    client.once('error', fail);
    client.once('close', () => fail(new Error('connection closed before CONNACK')));
    client.once('connect', (connack) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Request/response (file transfer) waits on small packets; Nagle would hold each for a delayed ACK.
      (client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
      client.removeAllListeners('error');
      client.removeAllListeners('close');
      resolve(wrap(client, opts.clientId, protocolVersion, connack.properties?.maximumPacketSize));
    });
  });
}

function wrap(client: MqttClient, clientId: string, protocolVersion: 4 | 5, brokerMaximumPacketSize: number | undefined): MqttConnection {
  let closed = false;
  const closeHandlers: ((err?: Error) => void)[] = [];
  const pending = new Set<(err: Error) => void>();
  let lastError: Error | undefined;
  const shutdown = () => {
    if (closed) return;
    closed = true;
    // MQTT.js would keep un-PUBACKed packets for a reconnect that never comes; fail them so the
    // outbox keeps them instead.
    const err = new MqttConnectionError(`connection ${clientId} closed${lastError ? `: ${lastError.message}` : ''}`);
    for (const reject of pending) reject(err);
    pending.clear();
    client.end(true);
    for (const h of closeHandlers) h(lastError);
  };
  client.on('error', (err) => {
    lastError = err;
  });
  client.on('close', shutdown);
  client.on('offline', shutdown);

  return {
    clientId,
    protocolVersion,
    brokerMaximumPacketSize,
    get closed() {
      return closed;
    },
    publish(topic, payload, o = {}) {
      if (closed) return Promise.reject(new MqttConnectionError(`connection ${clientId} is closed`));
      return new Promise<void>((resolve, reject) => {
        pending.add(reject);
        const props = o.properties && protocolVersion === 5 ? { properties: o.properties } : {};
        client.publish(topic, payload, { qos: o.qos ?? 1, retain: o.retain ?? false, ...props }, (err) => {
          if (!pending.delete(reject)) return;
          if (err) reject(new MqttConnectionError(`publish to ${topic} failed: ${err.message}`, [], { cause: err }));
          else resolve();
        });
      });
    },
    subscribe(filter, qos = 1) {
      if (closed) return Promise.reject(new MqttConnectionError(`connection ${clientId} is closed`));
      return new Promise<void>((resolve, reject) => {
        // A connection lost before the SUBACK would leave this pending for good (no reconnect
        // here), and a caller awaiting it — the collector's reconnect loop — stuck with it.
        pending.add(reject);
        client.subscribe(filter, { qos }, (err, granted) => {
          if (!pending.delete(reject)) return;
          if (err) reject(new MqttConnectionError(`subscribe ${filter} failed: ${err.message}`, [], { cause: err }));
          else if (granted?.some((g) => g.qos >= 128)) reject(new MqttConnectionError(`broker refused subscription ${filter}`));
          else resolve();
        });
      });
    },
    onMessage(handler) {
      client.on('message', (topic, payload, packet) => handler(messageOf(topic, payload, packet)));
    },
    onClose(handler) {
      if (closed) queueMicrotask(() => handler(lastError));
      else closeHandlers.push(handler);
    },
    end(o = {}) {
      if (closed) return Promise.resolve();
      const disconnect = o.endSession && protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0 } } : {};
      return new Promise<void>((resolve) => {
        client.end(false, disconnect, () => {
          shutdown();
          resolve();
        });
      });
    },
    abort() {
      client.stream?.destroy();
    },
  };
}
