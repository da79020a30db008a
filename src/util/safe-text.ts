// Text that came from outside (a device's birth, an MQTT topic) on its way to a terminal or a log:
// one line, no control characters. A newline in a bundle name would forge a whole log line or a
// `fleet status` row; an ESC would let the device drive the operator's terminal (colours, cursor
// moves, window title); bidi overrides would reorder what the operator reads.

// C0 controls, DEL, C1 controls, and the Unicode bidi embeddings/overrides/isolates and marks.
// eslint-disable-next-line no-control-regex -- matching control characters is this module's job
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u001b': '\\e' };

/**
 * `s` with every control character shown as an escape (`\n`, `\e`, `\x07`, `\u202e`), so it prints
 * as exactly one inert line. Printable text, backslashes included, is left as it is: a sender
 * typing `\n` literally gets two harmless characters.
 *
 * @example
 * safeText('mnist\n death: pi-07 offline'); // 'mnist\\n death: pi-07 offline' (one line)
 */
export function safeText(s: string): string {
  return s.replace(UNSAFE, (c) => NAMED[c] ?? (c.charCodeAt(0) <= 0xff ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}
