// A small protobuf wire-format walker. The generated decoder only says "premature EOF" or
// "illegal tag"; when a file fails to decode we walk it again here, guided by the schema, to say
// at which byte and in which field (graph.initializer[3].raw_data) it went wrong and whether the
// file looks truncated or is not protobuf at all. Tests also use it to look for raw fields in
// encoded bytes without trusting the decoder under test.
import { ScalarType, type DescField, type DescMessage } from '@bufbuild/protobuf';

export const WireType = { VARINT: 0, I64: 1, LEN: 2, SGROUP: 3, EGROUP: 4, I32: 5 } as const;

/** One field as it sits in the bytes. `valueStart`..`end` is the payload (for LEN: without the length). */
export interface WireField {
  no: number;
  wireType: number;
  /** Offset of the tag. */
  start: number;
  valueStart: number;
  end: number;
}

export interface WireProblem {
  /** Byte offset (from the start of the whole buffer) where the problem was found. */
  offset: number;
  /** Field path from the top-level message, e.g. `graph.node[2].attribute[0]`; empty at top level. */
  path: string;
  reason: string;
  /** The bytes ran out in the middle of something: the file was probably cut short. */
  truncated: boolean;
  /** For a length-delimited field that runs past the end: its number and where its (partial) payload starts. */
  partial?: { no: number; valueStart: number };
}

interface Varint {
  value: number;
  next: number;
}

/** Read a varint as a JS number (exact up to 2^53; larger values only matter as lengths, which would be nonsense anyway). */
function readVarint(bytes: Uint8Array, pos: number, end: number): Varint | 'eof' | 'overlong' {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos + i >= end) return 'eof';
    const b = bytes[pos + i]!;
    value += (b & 0x7f) * scale;
    scale *= 128;
    if ((b & 0x80) === 0) return { value, next: pos + i + 1 };
  }
  return 'overlong';
}

/**
 * Split bytes[start, end) into fields without interpreting them. Stops at the first malformed
 * field and reports it; `fields` holds everything before it.
 */
export function scanFields(
  bytes: Uint8Array,
  start = 0,
  end = bytes.length,
  path = '',
): { fields: WireField[]; problem?: WireProblem } {
  const fields: WireField[] = [];
  let pos = start;
  const fail = (offset: number, reason: string, truncated: boolean, partial?: WireProblem['partial']) => ({
    fields,
    problem: partial ? { offset, path, reason, truncated, partial } : { offset, path, reason, truncated },
  });
  while (pos < end) {
    const tag = readVarint(bytes, pos, end);
    if (tag === 'eof') return fail(pos, 'the bytes end inside a field tag', true);
    if (tag === 'overlong') return fail(pos, 'a field tag is longer than 10 bytes', false);
    const no = Math.floor(tag.value / 8);
    const wireType = tag.value % 8;
    if (no === 0) return fail(pos, `field number 0 (tag byte 0x${bytes[pos]!.toString(16).padStart(2, '0')}) is not allowed`, false);
    if (no > 536870911) return fail(pos, `field number ${no} is out of range`, false);
    let valueStart = tag.next;
    let next: number;
    switch (wireType) {
      case WireType.VARINT: {
        const v = readVarint(bytes, valueStart, end);
        if (v === 'eof') return fail(pos, `field ${no}: the bytes end inside a varint`, true);
        if (v === 'overlong') return fail(pos, `field ${no}: a varint is longer than 10 bytes`, false);
        next = v.next;
        break;
      }
      case WireType.I64:
        next = valueStart + 8;
        if (next > end) return fail(pos, `field ${no}: needs 8 bytes but only ${end - valueStart} remain`, true);
        break;
      case WireType.I32:
        next = valueStart + 4;
        if (next > end) return fail(pos, `field ${no}: needs 4 bytes but only ${end - valueStart} remain`, true);
        break;
      case WireType.LEN: {
        const len = readVarint(bytes, valueStart, end);
        if (len === 'eof') return fail(pos, `field ${no}: the bytes end inside a length`, true);
        if (len === 'overlong') return fail(pos, `field ${no}: a length is longer than 10 bytes`, false);
        valueStart = len.next;
        next = valueStart + len.value;
        if (next > end)
          return fail(pos, `field ${no} declares ${len.value} bytes but only ${end - valueStart} remain`, true, { no, valueStart });
        break;
      }
      default:
        // Groups (3, 4) are a proto2 feature no ONNX message uses; 6 and 7 do not exist.
        return fail(pos, `field ${no} has wire type ${wireType}, which no ONNX message uses`, false);
    }
    fields.push({ no, wireType, start: pos, valueStart, end: next });
    pos = next;
  }
  return { fields };
}

function expectedWireTypes(field: DescField): number[] {
  switch (field.fieldKind) {
    case 'message':
    case 'map':
      return [WireType.LEN];
    case 'enum':
      return [WireType.VARINT];
    case 'scalar':
      return [scalarWireType(field.scalar)];
    case 'list':
      if (field.listKind === 'message') return [WireType.LEN];
      // Repeated numbers may come packed (LEN) or one by one, whatever the schema says.
      if (field.listKind === 'enum') return [WireType.VARINT, WireType.LEN];
      return scalarWireType(field.scalar) === WireType.LEN ? [WireType.LEN] : [scalarWireType(field.scalar), WireType.LEN];
  }
}

function scalarWireType(scalar: ScalarType): number {
  switch (scalar) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.I64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return WireType.I32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return WireType.LEN;
    default:
      return WireType.VARINT;
  }
}

/**
 * Walk `bytes` as a `schema` message, recursing into known message fields, and return the first
 * structural problem (or undefined when the bytes are well-formed). Unknown fields are skipped
 * as opaque, the way a decoder keeps them.
 */
export function findWireProblem(bytes: Uint8Array, schema: DescMessage): WireProblem | undefined {
  return walk(bytes, 0, bytes.length, schema, '', 0);
}

function walk(bytes: Uint8Array, start: number, end: number, schema: DescMessage, path: string, depth: number): WireProblem | undefined {
  if (depth > 100) return { offset: start, path, reason: 'messages nest more than 100 deep', truncated: false };
  const { fields, problem } = scanFields(bytes, start, end, path);
  const counts = new Map<number, number>();
  for (const f of fields) {
    const desc = schema.fields.find((d) => d.number === f.no);
    const index = counts.get(f.no) ?? 0;
    counts.set(f.no, index + 1);
    if (!desc) continue;
    const where = (path ? path + '.' : '') + desc.name + (desc.fieldKind === 'list' ? `[${index}]` : '');
    const allowed = expectedWireTypes(desc);
    if (!allowed.includes(f.wireType)) {
      return {
        offset: f.start,
        path: where,
        reason: `field ${f.no} (${desc.name}) has wire type ${f.wireType}, expected ${allowed.join(' or ')}`,
        truncated: false,
      };
    }
    const sub = desc.fieldKind === 'message' ? desc.message : desc.fieldKind === 'list' && desc.listKind === 'message' ? desc.message : undefined;
    if (sub) {
      const inner = walk(bytes, f.valueStart, f.end, sub, where, depth + 1);
      if (inner) return inner;
    }
  }
  if (problem?.partial) {
    // A field that runs past the end: name it, and look inside for the innermost cut-off field.
    const desc = schema.fields.find((d) => d.number === problem.partial!.no);
    if (desc) {
      const index = counts.get(desc.number) ?? 0;
      const where = (path ? path + '.' : '') + desc.name + (desc.fieldKind === 'list' ? `[${index}]` : '');
      const sub = desc.fieldKind === 'message' || (desc.fieldKind === 'list' && desc.listKind === 'message') ? desc.message : undefined;
      if (sub) {
        const inner = walk(bytes, problem.partial.valueStart, end, sub, where, depth + 1);
        if (inner) return { ...inner, truncated: inner.truncated || problem.truncated };
      }
      return { ...problem, path: where, reason: problem.reason.replace(`field ${desc.number}`, `field ${desc.number} (${desc.name})`) };
    }
  }
  return problem;
}

/** Encode a varint (for tests and for building small messages by hand). */
export function encodeVarint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

/** Bytes of one field: tag plus payload (`payload` is the varint value, or the LEN bytes). */
export function encodeField(no: number, wireType: number, payload: number | bigint | Uint8Array): Uint8Array {
  const tag = encodeVarint(no * 8 + wireType);
  if (payload instanceof Uint8Array) {
    const len = wireType === WireType.LEN ? encodeVarint(payload.length) : [];
    return Uint8Array.from([...tag, ...len, ...payload]);
  }
  return Uint8Array.from([...tag, ...encodeVarint(payload)]);
}
