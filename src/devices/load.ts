// Finding, reading and validating device profiles (`devices/<id>.json`). Every problem in a
// profile comes back at once as one ValidationError whose problems name the file and JSON path,
// what was expected, what came instead and how to fix it; wording comes from the schema's own
// descriptions so the messages and the docs do not drift apart.
import { existsSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { InputError, ValidationError, show, type Problem } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { packageRoot } from '../util/package.js';
import { DeviceProfileSchema, deviceProfileJsonSchemaText, type DeviceProfile } from './schema.js';

export { deviceProfileJsonSchema, deviceProfileJsonSchemaText } from './schema.js';
export { findPackageRoot, packageRoot } from '../util/package.js';

/** File name of the generated JSON Schema inside devices/; not a profile. */
export const DEVICE_SCHEMA_FILE = 'device-profile.schema.json';

/** Absolute path of the folder that holds the device profiles. */
export function devicesDir(): string {
  return path.join(packageRoot(), 'devices');
}

/** Ids of the profiles shipped in devices/, sorted. */
export async function listDeviceProfiles(): Promise<string[]> {
  const entries = await fsp.readdir(devicesDir());
  return entries
    .filter((f) => f.endsWith('.json') && f !== DEVICE_SCHEMA_FILE)
    .map((f) => f.slice(0, -'.json'.length))
    .sort();
}

/**
 * Load and validate a profile. `idOrPath` is either an id ("rpi4" → devices/rpi4.json in the
 * package) or a path to a JSON file (anything with a slash or ending in .json).
 * @throws InputError for an unknown id, an unreadable file or invalid JSON; ValidationError
 *   (an InputError) listing every schema problem.
 */
export async function loadDeviceProfile(idOrPath: string): Promise<DeviceProfile> {
  const looksLikePath = idOrPath.includes('/') || idOrPath.includes(path.sep) || idOrPath.endsWith('.json');
  let file: string;
  if (looksLikePath) {
    file = path.resolve(idOrPath);
  } else {
    file = path.join(devicesDir(), `${idOrPath}.json`);
    if (!existsSync(file)) {
      const known = await listDeviceProfiles();
      const near = closest(idOrPath, known);
      throw new InputError(`unknown device profile ${JSON.stringify(idOrPath)}; known profiles: ${known.join(', ')}`, [
        {
          where: 'device profile id',
          expected: `one of: ${known.join(', ')}`,
          got: JSON.stringify(idOrPath),
          fix: near ? `did you mean ${JSON.stringify(near)}?` : `pick a known id, or pass a path to a profile JSON file (e.g. ./my-board.json)`,
        },
      ]);
    }
  }
  const shown = displayPath(file);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new InputError(`${shown}: cannot read device profile (${code})`, [{ where: shown, message: `cannot read the file (${code})`, fix: 'check the path; ids resolve to devices/<id>.json' }], { cause: err });
  }
  return parseDeviceProfile(text, shown);
}

/** Parse JSON text and validate it; `file` names it in messages and must end in `<id>.json`. */
export function parseDeviceProfile(text: string, file: string): DeviceProfile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const { line, column } = jsonErrorPosition(msg, text);
    const where = `${file}:${line}:${column}`;
    throw new InputError(`${where}: invalid JSON: ${msg}`, [{ where, message: `invalid JSON: ${msg}`, fix: 'fix the syntax at that line and column (a missing comma or quote, or a trailing comma)' }], { cause: err });
  }
  return validateDeviceProfile(json, file);
}

/**
 * Validate parsed JSON against the device profile schema, plus the rule that `id` equals the
 * file's base name. Returns the profile with defaults filled in.
 * @throws ValidationError with one Problem per mistake.
 */
export function validateDeviceProfile(json: unknown, file: string): DeviceProfile {
  const result = DeviceProfileSchema.safeParse(json, { reportInput: true });
  const problems: Problem[] = [];
  const expectedId = path.basename(file).replace(/\.json$/i, '');
  if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
    const id = (json as Record<string, unknown>).id;
    if (typeof id === 'string' && id !== expectedId)
      problems.push({
        where: `${file}: id`,
        expected: `${JSON.stringify(expectedId)} (the file name without .json)`,
        got: JSON.stringify(id),
        fix: `rename the file to ${id}.json or set "id": ${JSON.stringify(expectedId)}`,
      });
  }
  if (!result.success) problems.push(...result.error.issues.flatMap((i) => toProblems(i, file, json)));
  if (problems.length) {
    problems.sort((a, b) => a.where.localeCompare(b.where));
    throw new ValidationError(file, dedupe(problems));
  }
  return result.data as DeviceProfile;
}

/** Write devices/device-profile.schema.json (or `file`) from the schema. */
export async function writeDeviceProfileJsonSchema(file = path.join(devicesDir(), DEVICE_SCHEMA_FILE)): Promise<void> {
  await writeFileAtomic(file, deviceProfileJsonSchemaText());
}

// ---------------------------------------------------------------------------------------------

function displayPath(file: string): string {
  const rel = path.relative(packageRoot(), file);
  if (!rel.startsWith('..') && !path.isAbsolute(rel)) return rel.split(path.sep).join('/');
  const fromCwd = path.relative(process.cwd(), file);
  return fromCwd.startsWith('..') ? file : fromCwd.split(path.sep).join('/');
}

function jsonErrorPosition(message: string, text: string): { line: number; column: number } {
  const lc = /line (\d+) column (\d+)/.exec(message);
  if (lc) return { line: Number(lc[1]), column: Number(lc[2]) };
  const pos = /position (\d+)/.exec(message);
  // No position means the text ended early ("Unexpected end of JSON input").
  const offset = pos ? Number(pos[1]) : text.length;
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return { line, column };
}

type Key = PropertyKey;

function formatPath(p: readonly Key[]): string {
  let out = '';
  for (const k of p) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out ? `.${String(k)}` : String(k);
  }
  return out;
}

function whereOf(file: string, p: readonly Key[]): string {
  const s = formatPath(p);
  return s ? `${file}: ${s}` : file;
}

function valueAt(root: unknown, p: readonly Key[]): unknown {
  let cur = root;
  for (const k of p) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' && Number.isInteger(v)) return 'an integer';
  return `a ${typeof v}`;
}

function gotWithType(v: unknown): string {
  if (v === undefined) return 'nothing (the field is missing)';
  return `${show(v)} (${typeName(v)})`;
}

const EXPECTED_TYPE: Record<string, string> = {
  number: 'a number',
  int: 'an integer',
  string: 'a string',
  boolean: 'true or false',
  object: 'an object',
  array: 'an array',
};

// Minimal view of zod's internal definitions, enough to find a field's schema by path.
interface SchemaNode {
  description?: string | undefined;
  _zod: { def: { type: string; [k: string]: unknown } };
}

/** The schema at `p` (following the input to pick a discriminated-union branch), with its description. */
function schemaAt(p: readonly Key[], input: unknown): { node: SchemaNode | undefined; description: string | undefined } {
  let node: SchemaNode | undefined = DeviceProfileSchema as unknown as SchemaNode;
  let value = input;
  let description: string | undefined;
  const unwrap = (n: SchemaNode | undefined): SchemaNode | undefined => {
    description = undefined;
    while (n) {
      description ??= n.description;
      const def = n._zod.def;
      if (def.type === 'optional' || def.type === 'default' || def.type === 'nullable' || def.type === 'readonly' || def.type === 'prefault')
        n = def.innerType as SchemaNode;
      else if (def.type === 'pipe') n = def.in as SchemaNode;
      else if (def.type === 'union' && typeof def.discriminator === 'string') {
        const disc = def.discriminator;
        const want = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[disc] : undefined;
        const options = def.options as SchemaNode[];
        const match = options.find((o) => {
          const shape = o._zod.def.shape as Record<string, SchemaNode> | undefined;
          const lit = shape?.[disc]?._zod.def.values as unknown[] | undefined;
          return lit?.includes(want);
        });
        if (!match) return n;
        description ??= match.description;
        n = match;
      } else return n;
    }
    return n;
  };
  node = unwrap(node);
  for (const k of p) {
    if (!node) break;
    const def = node._zod.def;
    if (def.type === 'object' && typeof k === 'string') node = (def.shape as Record<string, SchemaNode>)[k];
    else if (def.type === 'array') node = def.element as SchemaNode;
    else node = undefined;
    value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[k] : undefined;
    node = unwrap(node);
  }
  return { node, description };
}

function knownKeys(node: SchemaNode | undefined): string[] {
  if (node?._zod.def.type !== 'object') return [];
  return Object.keys(node._zod.def.shape as Record<string, unknown>);
}

function toProblems(issue: z.core.$ZodIssue, file: string, input: unknown): Problem[] {
  const p = issue.path;
  const where = whereOf(file, p);
  const value = 'input' in issue ? issue.input : valueAt(input, p);
  const { node, description } = schemaAt(p, input);
  const about = description ? ` — ${description}` : '';
  switch (issue.code) {
    case 'invalid_type': {
      // z.int() reports its expected type as plain "number"; its definition knows better.
      const isInt = issue.expected === 'number' && node?._zod.def.format === 'safeint';
      const expected = isInt ? EXPECTED_TYPE.int! : (EXPECTED_TYPE[issue.expected] ?? issue.expected);
      const missing = value === undefined;
      return [
        {
          where,
          expected,
          got: gotWithType(value),
          fix: missing ? `add ${formatPath(p)}: ${expected}${about}` : `give ${formatPath(p)} as ${expected}${about}`,
        },
      ];
    }
    case 'invalid_value': {
      const values = issue.values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
      const near = typeof value === 'string' ? closest(value, values) : undefined;
      return [
        {
          where,
          expected: `one of: ${values.join(', ')}`,
          got: show(value),
          fix: near ? `did you mean ${JSON.stringify(near)}? Otherwise use one of the valid values listed` : `use one of the valid values listed${about}`,
        },
      ];
    }
    case 'invalid_union': {
      const options = 'options' in issue ? issue.options : undefined;
      if (issue.discriminator !== undefined && options) {
        const values = options.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
        const got = valueAt(input, p);
        const near = typeof got === 'string' ? closest(got, values) : undefined;
        return [{ where, expected: `one of: ${values.join(', ')}`, got: got === undefined ? 'nothing (the field is missing)' : show(got), fix: near ? `did you mean ${JSON.stringify(near)}?` : `set ${formatPath(p)} to one of the valid values listed` }];
      }
      return [{ where, message: issue.message, got: show(value), fix: 'match one of the allowed shapes (see devices/device-profile.schema.json)' }];
    }
    case 'too_small':
    case 'too_big': {
      const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      const cmp = issue.code === 'too_small' ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      const expected =
        issue.origin === 'array' || issue.origin === 'set'
          ? `${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} item${Number(bound) === 1 ? '' : 's'}`
          : issue.origin === 'string'
            ? `${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} character${Number(bound) === 1 ? '' : 's'}`
            : `a number ${cmp} ${String(bound)}`;
      return [{ where, expected, got: show(value), fix: `change ${formatPath(p)}${about}` }];
    }
    case 'invalid_format': {
      // Our regexes carry their own human wording in `message`.
      const expected = issue.format === 'regex' || issue.format === 'starts_with' ? issue.message : `a valid ${issue.format}`;
      return [{ where, expected, got: show(value), fix: `change ${formatPath(p)}${about}` }];
    }
    case 'unrecognized_keys': {
      const keys = knownKeys(schemaAt(p, input).node);
      return issue.keys.map((k) => {
        const near = closest(k, keys);
        return {
          where: whereOf(file, [...p, k]),
          expected: keys.length ? `one of the fields: ${keys.join(', ')}` : 'no field here',
          got: `unknown field ${JSON.stringify(k)}`,
          fix: near ? `did you mean ${JSON.stringify(near)}?` : 'remove it (unknown fields are rejected so that typos do not pass silently)',
        };
      });
    }
    case 'custom': {
      // Rules from the schema's refinements carry expected/got/fix; the reason goes in front of
      // the fix so the shared formatter prints "where: expected E, got G (fix: why; what to do)".
      const params = (issue.params ?? {}) as { expected?: string; got?: string; fix?: string };
      if (params.expected === undefined) return [{ where, message: issue.message, got: show(value), fix: params.fix }];
      return [{ where, expected: params.expected, got: params.got ?? show(value), fix: params.fix ? `${issue.message}; ${params.fix}` : issue.message }];
    }
    default:
      return [{ where, message: issue.message, got: show(value) }];
  }
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = JSON.stringify(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The only candidate `word` is a prefix of, else the one within edit distance ⌈len/3⌉: for "did you mean" hints. */
function closest(word: string, candidates: readonly string[]): string | undefined {
  // A truncated value ("u8s8" for "u8s8-qdq") is far in edit distance but obviously meant.
  const prefixed = word.length >= 3 ? candidates.filter((c) => c.toLowerCase().startsWith(word.toLowerCase())) : [];
  if (prefixed.length === 1) return prefixed[0];
  let best: string | undefined;
  let bestD = Math.max(1, Math.ceil(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
