// A small, strict parser for the Prometheus text exposition format 0.0.4, for the /metrics tests:
// it refuses anything the grammar does not allow (and a few things our own conventions forbid:
// a family without HELP and TYPE, a counter not named *_total) and names the line that broke it.
// Written from the format's description, not taken from a client library.

export type PromType = 'counter' | 'gauge' | 'summary' | 'histogram' | 'untyped';

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  help: string | undefined;
  type: PromType | undefined;
  samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;
const TYPES: readonly PromType[] = ['counter', 'gauge', 'summary', 'histogram', 'untyped'];

export class PromParseError extends Error {}

function parseFloatStrict(s: string, where: string): number {
  if (!FLOAT.test(s)) throw new PromParseError(`${where}: value ${JSON.stringify(s)} is not a float`);
  if (s.endsWith('Inf')) return s.startsWith('-') ? -Infinity : Infinity;
  return s === 'NaN' ? NaN : Number(s);
}

function unescapeHelp(s: string, where: string): string {
  return s.replace(/\\(.?)/g, (_m, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new PromParseError(`${where}: HELP may escape only \\\\ and \\n, got \\${c}`);
  });
}

/** Parse `name{labels} value [timestamp]`; returns the sample. */
function parseSample(line: string, where: string): PromSample {
  const nameMatch = /^[^{ \t]+/.exec(line);
  if (!nameMatch || !METRIC_NAME.test(nameMatch[0])) throw new PromParseError(`${where}: bad metric name in ${JSON.stringify(line)}`);
  const name = nameMatch[0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      if (line[i] === '}') {
        i++;
        break;
      }
      const ln = /^[^=]*/.exec(line.slice(i))![0];
      if (!LABEL_NAME.test(ln)) throw new PromParseError(`${where}: bad label name ${JSON.stringify(ln)}`);
      if (ln.startsWith('__')) throw new PromParseError(`${where}: label ${ln} uses the reserved __ prefix`);
      if (ln in labels) throw new PromParseError(`${where}: label ${ln} repeated`);
      i += ln.length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new PromParseError(`${where}: expected ="… after label ${ln}`);
      i += 2;
      let v = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) throw new PromParseError(`${where}: unterminated value of label ${ln}`);
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i + 1];
          if (e === '\\') v += '\\';
          else if (e === '"') v += '"';
          else if (e === 'n') v += '\n';
          else throw new PromParseError(`${where}: label value may escape only \\\\, \\" and \\n, got \\${e ?? 'end of line'}`);
          i += 2;
        } else {
          v += c;
          i++;
        }
      }
      labels[ln] = v;
      i++;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new PromParseError(`${where}: expected , or } after label ${ln}`);
    }
  }
  const rest = line.slice(i);
  const m = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
  if (!m) throw new PromParseError(`${where}: expected " <value> [<timestamp>]" after the labels, got ${JSON.stringify(rest)}`);
  return { name, labels, value: parseFloatStrict(m[1]!, where) };
}

function familyOf(sample: string, fam: PromFamily): boolean {
  if (sample === fam.name) return fam.type !== 'histogram';
  if (fam.type === 'summary') return sample === `${fam.name}_sum` || sample === `${fam.name}_count`;
  if (fam.type === 'histogram') return [`${fam.name}_bucket`, `${fam.name}_sum`, `${fam.name}_count`].includes(sample);
  return false;
}

/** Parse a whole exposition; throws PromParseError naming the first offending line. */
export function parseExposition(text: string): Map<string, PromFamily> {
  if (!text.endsWith('\n')) throw new PromParseError('the exposition must end with a line feed');
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  const seen = new Set<string>();
  let current: PromFamily | undefined;
  const lines = text.slice(0, -1).split('\n');
  const family = (name: string): PromFamily => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, help: undefined, type: undefined, samples: [] }));
    return f;
  };
  const enter = (f: PromFamily, where: string): void => {
    if (current === f) return;
    if (closed.has(f.name)) throw new PromParseError(`${where}: family ${f.name} appears again after another family (must be one group)`);
    if (current) closed.add(current.name);
    current = f;
  };
  lines.forEach((line, n) => {
    const where = `line ${n + 1}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kw, name, arg = ''] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC_NAME.test(name)) throw new PromParseError(`${where}: bad metric name ${JSON.stringify(name)} in ${kw}`);
      const f = family(name);
      enter(f, where);
      if (kw === 'HELP') {
        if (f.help !== undefined) throw new PromParseError(`${where}: second HELP for ${name}`);
        f.help = unescapeHelp(arg, where);
      } else {
        if (f.type !== undefined) throw new PromParseError(`${where}: second TYPE for ${name}`);
        if (f.samples.length) throw new PromParseError(`${where}: TYPE for ${name} after its samples`);
        if (!(TYPES as readonly string[]).includes(arg)) throw new PromParseError(`${where}: unknown type ${JSON.stringify(arg)} for ${name}`);
        f.type = arg as PromType;
        if (f.type === 'counter' && !name.endsWith('_total')) throw new PromParseError(`${where}: counter ${name} is not named *_total`);
      }
      return;
    }
    const s = parseSample(line, where);
    if (!current || !familyOf(s.name, current)) throw new PromParseError(`${where}: sample ${s.name} is not in the family declared above it (${current?.name ?? 'none'})`);
    if (current.help === undefined || current.type === undefined) throw new PromParseError(`${where}: ${current.name} has samples before its HELP and TYPE`);
    const key = `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
    if (seen.has(key)) throw new PromParseError(`${where}: duplicate series ${key}`);
    seen.add(key);
    if (current.type === 'summary' && s.name === current.name) {
      const q = s.labels.quantile;
      if (q === undefined || !FLOAT.test(q) || Number(q) < 0 || Number(q) > 1) throw new PromParseError(`${where}: summary sample needs a quantile label in [0, 1]`);
    }
    if (current.type === 'counter' && !(s.value >= 0)) throw new PromParseError(`${where}: counter ${s.name} is ${s.value}`);
    current.samples.push(s);
  });
  for (const f of families.values()) {
    if (f.help === undefined || f.type === undefined) throw new PromParseError(`family ${f.name} lacks ${f.help === undefined ? 'HELP' : 'TYPE'}`);
  }
  return families;
}

/** The one sample of `family` whose labels include `labels`; throws when none or several match. */
export function sampleValue(fams: Map<string, PromFamily>, family: string, labels: Record<string, string> = {}, name = family): number {
  const f = fams.get(family);
  if (!f) throw new Error(`no family ${family}`);
  const hits = f.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length !== 1) throw new Error(`${family}${JSON.stringify(labels)}: ${hits.length} samples match, expected 1`);
  return hits[0]!.value;
}
