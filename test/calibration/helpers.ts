// Shared pieces of the calibration tests: a seeded RNG and synthetic early-exit observations.
import { mulberry32 as rng } from '../../src/util/random.js';
export { rng };

/**
 * K exits × n samples: each sample has a difficulty d; exit k is correct with a probability that
 * grows with k and falls with d, and its score is noisy 1 − d (+ depth), so scores are informative.
 */
export function synthetic(K: number, n: number, seed = 1): { scores: Float64Array[]; correct: Uint8Array[] } {
  const r = rng(seed);
  const d = Float64Array.from({ length: n }, () => r());
  const scores: Float64Array[] = [];
  const correct: Uint8Array[] = [];
  for (let k = 0; k < K; k++) {
    const skill = 0.3 + (0.6 * (k + 1)) / K;
    scores.push(Float64Array.from(d, (x) => Math.min(1, Math.max(0, 1 - x + 0.1 * k + 0.15 * (r() - 0.5)))));
    correct.push(Uint8Array.from(d, (x) => (r() < Math.min(1, skill + 0.5 - x) ? 1 : 0)));
  }
  return { scores, correct };
}

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
}

/**
 * A strict little XML parser for the SVG the report writes (no dependency for it): elements,
 * quoted attributes, text with the five predefined entities or numeric ones, comments and the
 * declaration. Throws on anything not well-formed (unbalanced tags, bare '&' or '<', bad attrs).
 */
export function parseXml(src: string): XmlElement {
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`XML: ${why} at offset ${i}: ${JSON.stringify(src.slice(i, i + 30))}`);
  };
  const checkText = (t: string): void => {
    if (t.includes('<')) fail('bare <');
    for (const m of t.matchAll(/&([^;]*);?/g)) if (!/^(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+)$/i.test(m[1]!) || !m[0].endsWith(';')) fail(`bad entity ${m[0]}`);
  };
  const skip = (): void => {
    for (;;) {
      while (i < src.length && /\s/.test(src[i]!)) i++;
      if (src.startsWith('<?', i)) i = src.indexOf('?>', i) + 2 || fail('unterminated <?');
      else if (src.startsWith('<!--', i)) i = src.indexOf('-->', i) + 3 || fail('unterminated comment');
      else return;
    }
  };
  const element = (): XmlElement => {
    if (src[i] !== '<') fail('expected <');
    const m = /^<([A-Za-z_][\w.:-]*)/.exec(src.slice(i)) ?? fail('bad tag name');
    const name = m![1]!;
    i += m![0].length;
    const attrs: Record<string, string> = {};
    for (;;) {
      const a = /^\s+([A-Za-z_][\w.:-]*)\s*=\s*("([^"<]*)"|'([^'<]*)')/.exec(src.slice(i));
      if (!a) break;
      if (a[1]! in attrs) fail(`duplicate attribute ${a[1]}`);
      const v = a[3] ?? a[4] ?? '';
      checkText(v);
      attrs[a[1]!] = v;
      i += a[0].length;
    }
    while (/\s/.test(src[i] ?? '')) i++;
    if (src.startsWith('/>', i)) {
      i += 2;
      return { name, attrs, children: [] };
    }
    if (src[i] !== '>') fail('expected > or />');
    i++;
    const children: XmlElement[] = [];
    for (;;) {
      const next = src.indexOf('<', i);
      if (next < 0) fail(`unclosed <${name}>`);
      checkText(src.slice(i, next));
      i = next;
      if (src.startsWith('</', i)) {
        const close = new RegExp(`^</${name.replace(/[.]/g, '\\.')}\\s*>`).exec(src.slice(i)) ?? fail(`expected </${name}>`);
        i += close![0].length;
        return { name, attrs, children };
      }
      if (src.startsWith('<!--', i)) {
        i = src.indexOf('-->', i) + 3 || fail('unterminated comment');
        continue;
      }
      children.push(element());
    }
  };
  skip();
  const root = element();
  skip();
  if (i !== src.length) fail('content after the root element');
  return root;
}

export function findById(e: XmlElement, id: string): XmlElement | undefined {
  if (e.attrs.id === id) return e;
  for (const c of e.children) {
    const f = findById(c, id);
    if (f) return f;
  }
  return undefined;
}
