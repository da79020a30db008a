// The wire protocol of bundle file transfer over MQTT 5: a device asks for a byte range of a file
// named by its SHA-256 and a file server answers on the request's response topic with the same
// correlation data. Shared by the device's downloader and the operator's file server.
//
// Topics live under their own root, not under the telemetry namespace (edgeexit/v1/<fleet>/…):
// a collector subscribes to all of that, and would otherwise receive every block of every
// download. A device requests on its own topic and is answered on its own topic, so the broker's
// ACL (fleet/broker-auth.ts) keeps one device from reading another's replies, and the server
// answers only on the requester's reply topic, so nobody can make it publish elsewhere.
import { z } from 'zod';
import { checkId } from '../telemetry/payloads.js';

export const FILES_ROOT = 'edgeexit/files/v1';
/** MQTT 5 shared-subscription group: several file servers split the requests between them. */
export const FILE_SERVER_GROUP = 'edgeexit-files';
/** The most file bytes one reply carries, whatever a device asks (a 64 KiB packet, less room for headers). */
export const MAX_CHUNK_BYTES = 64 * 1024;
/** Room a reply needs besides its file bytes (topic, correlation data, properties), taken off a device's packet limit. */
export const REPLY_OVERHEAD_BYTES = 1024;
/** A request larger than this is refused unread. */
export const MAX_REQUEST_BYTES = 512;
/** Correlation data longer than this is refused (ours is 16 bytes). */
export const MAX_CORRELATION_BYTES = 64;

/**
 * Topic a device publishes its file requests on.
 *
 * @example
 * ```ts
 * import { fileRequestTopic } from 'edgeexit/agent';
 * fileRequestTopic('lab', 'pi-07'); // 'edgeexit/files/v1/lab/pi-07/get'
 * ```
 */
export function fileRequestTopic(fleet: string, device: string): string {
  checkId('fleet', fleet);
  checkId('device', device);
  return `${FILES_ROOT}/${fleet}/${device}/get`;
}

/**
 * Topic a device receives its file replies on (the only response topic a server answers).
 *
 * @example
 * ```ts
 * import { fileReplyTopic } from 'edgeexit/agent';
 * fileReplyTopic('lab', 'pi-07'); // 'edgeexit/files/v1/lab/pi-07/reply'
 * ```
 */
export function fileReplyTopic(fleet: string, device: string): string {
  checkId('fleet', fleet);
  checkId('device', device);
  return `${FILES_ROOT}/${fleet}/${device}/reply`;
}

/**
 * What a file server subscribes to (shared, so any instance can answer any request).
 *
 * @example
 * ```ts
 * import { fileServerSubscription } from 'edgeexit/agent';
 * fileServerSubscription(); // '$share/edgeexit-files/edgeexit/files/v1/+/+/get'
 * ```
 */
export function fileServerSubscription(shared = true): string {
  const filter = `${FILES_ROOT}/+/+/get`;
  return shared ? `$share/${FILE_SERVER_GROUP}/${filter}` : filter;
}

/** The device a request topic belongs to, or undefined when it is not one. */
export function parseRequestTopic(topic: string): { fleet: string; device: string } | undefined {
  const prefix = `${FILES_ROOT}/`;
  if (!topic.startsWith(prefix)) return undefined;
  const parts = topic.slice(prefix.length).split('/');
  if (parts.length !== 3 || parts[2] !== 'get') return undefined;
  const ok = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  if (!ok.test(parts[0]!) || !ok.test(parts[1]!)) return undefined;
  return { fleet: parts[0]!, device: parts[1]! };
}

export const FileRequestSchema = z.strictObject({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  offset: z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  length: z.int().min(1).max(MAX_CHUNK_BYTES),
});
/** `length` bytes of the file whose SHA-256 is `sha256`, from `offset`. */
export type FileRequest = z.output<typeof FileRequestSchema>;

/** Reply statuses, in the `status` user property; the payload holds the bytes only with `ok`. */
export type FileReplyStatus = 'ok' | 'not-found' | 'bad-request';
