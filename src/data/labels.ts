// The one rule that ties a folder name (or a dataset's class name) to a model label. eval,
// compile's calibration images, calibrate and telemetry's on-device accuracy all go through
// labelMatcher, so a folder that counts in one place counts in every other.
//
// Rule: equal names match; otherwise two names match when they are equal after lower-casing and
// dropping everything but letters and digits. Labels may hold characters a folder name cannot
// ('T-shirt/top'), and people write the same class as 'T-shirt_top', 'tshirt_top' or 'Ankle boot'
// vs 'ankle_boot'; the loose form catches all of those without guessing between two labels.

/** The rule in words, quoted by every error about label and folder names. */
export const LABEL_MATCH_RULE =
  "a folder matches a label when the names are equal ignoring case and every character but letters and digits (so 'T-shirt/top', 'T-shirt_top' and 'tshirt_top' are one class)";

/**
 * The loose form two names are compared in: lower case, letters and digits only.
 *
 * @example labelKey('T-shirt/top') === labelKey('tshirt_top') // 'tshirttop'
 */
export function labelKey(name: string): string {
  return name.normalize('NFKC').toLowerCase().replace(/[^\p{L}\p{N}]/gu, '');
}

/**
 * The folder name a label is expected under: path separators become '_' ('T-shirt/top' →
 * 'T-shirt_top'). Any name that matches under the rule works; this is the one hints suggest.
 */
export function folderNameForLabel(label: string): string {
  return label.replace(/[/\\]/g, '_');
}

/** Label lookup by folder or class name under the rule. */
export interface LabelMatcher {
  readonly labels: readonly string[];
  /** The label index `name` matches, or undefined (no label, or two labels share its loose form). */
  indexOf(name: string): number | undefined;
}

const AMBIGUOUS = -1;

/**
 * Build the lookup for `labels` (a model's `edgeexit.labels`, in logit order).
 *
 * @example labelMatcher(['T-shirt/top', 'Trouser']).indexOf('t-shirt_top') // 0
 */
export function labelMatcher(labels: readonly string[]): LabelMatcher {
  const exact = new Map<string, number>();
  const loose = new Map<string, number>();
  labels.forEach((label, i) => {
    for (const name of [label, folderNameForLabel(label)]) if (!exact.has(name)) exact.set(name, i);
    const key = labelKey(label);
    // Two labels with one loose form: only their exact names can tell them apart.
    if (key) loose.set(key, loose.has(key) ? AMBIGUOUS : i);
  });
  return {
    labels,
    indexOf(name) {
      const hit = exact.get(name) ?? loose.get(labelKey(name));
      return hit === undefined || hit === AMBIGUOUS ? undefined : hit;
    },
  };
}

// Telemetry looks a label up per inference with the same labels array every time.
const cache = new WeakMap<readonly string[], LabelMatcher>();

/** labelMatcher, built once per labels array. */
export function matcherFor(labels: readonly string[]): LabelMatcher {
  let m = cache.get(labels);
  if (!m) cache.set(labels, (m = labelMatcher(labels)));
  return m;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur.push(Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * One hint per name in `names` that matches no label: rename it to the closest label that no
 * name in `present` (every folder, by default `names`) matches yet — by edit distance of the
 * loose forms, when close — else to one of those labels, or remove it.
 *
 * @example renameHints(['tshirt', 'trouser'], ['T-shirt/top', 'Trouser']) // ['rename "tshirt" to "T-shirt_top"']
 */
export function renameHints(names: readonly string[], labels: readonly string[], present: readonly string[] = names): string[] {
  const m = labelMatcher(labels);
  const taken = new Set(present.map((n) => m.indexOf(n)).filter((i): i is number => i !== undefined));
  const free = labels.map((l, i) => ({ l, i, key: labelKey(l) })).filter((x) => !taken.has(x.i));
  const quote = (s: string): string => JSON.stringify(s);
  return names
    .filter((n) => m.indexOf(n) === undefined)
    .map((n) => {
      const key = labelKey(n);
      // Close: a few edits apart, or one name a part of the other ('ankle' for 'Ankle boot').
      const near = (x: (typeof free)[number]): number => (key && (x.key.includes(key) || key.includes(x.key)) ? 0 : editDistance(key, x.key));
      const best = free.map((x) => ({ ...x, d: near(x) })).sort((a, b) => a.d - b.d || a.i - b.i)[0];
      if (best && best.d <= Math.max(2, Math.floor(Math.max(key.length, best.key.length) / 3))) return `rename ${quote(n)} to ${quote(folderNameForLabel(best.l))}`;
      if (free.length > 0) return `rename ${quote(n)} to one of ${free.map((x) => quote(folderNameForLabel(x.l))).join(', ')} (labels with no folder) or remove it`;
      return `remove ${quote(n)} (every label already has a folder)`;
    });
}
