// Error types shared by every module. Each error says what was wrong, where, what was expected,
// what came instead and how to fix it; the CLI maps the class to an exit code in one place
// (src/cli/main.ts) and never exits from deep inside.

/** One problem found in an input: collected so that a file reports all of them at once. */
export interface Problem {
  /** Where: a file, optionally with a JSON path / field inside it (e.g. `devices/rpi4.json: power.busyWatts`). */
  where: string;
  /** What was expected (a type, a range, the list of valid values). */
  expected?: string;
  /** What came instead, already shortened for printing. */
  got?: string;
  /** What to do about it. */
  fix?: string;
  /** Free text when expected/got do not fit. */
  message?: string;
}

export function formatProblem(p: Problem): string {
  const parts = [p.where + ':'];
  if (p.message) parts.push(p.message);
  if (p.expected !== undefined) parts.push(`expected ${p.expected}`);
  if (p.got !== undefined) parts.push(`got ${p.got}`);
  let line = parts.join(' ');
  if (p.expected !== undefined && p.got !== undefined && !p.message) line = `${p.where}: expected ${p.expected}, got ${p.got}`;
  if (p.fix) line += ` (fix: ${p.fix})`;
  return line;
}

/** Base class: anything the user can act on. `exitCode` is what the CLI returns. */
export class EdgeExitError extends Error {
  readonly exitCode: number = 1;
  constructor(
    message: string,
    readonly problems: Problem[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A file or argument given by the user is missing, unreadable or malformed (exit code 2). */
export class InputError extends EdgeExitError {
  override readonly exitCode = 2;
}

/** A file's content fails its schema; `problems` holds every failure, not only the first. */
export class ValidationError extends InputError {
  constructor(file: string, problems: Problem[]) {
    super(
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n` +
        problems.map((p) => '  - ' + formatProblem(p)).join('\n'),
      problems,
    );
  }
}

/** The bytes are not a (complete) ONNX model. */
export class OnnxFormatError extends InputError {}

/** A model is valid ONNX but uses something edgeexit cannot handle (an op, a dtype, a layout). */
export class UnsupportedError extends EdgeExitError {
  override readonly exitCode = 3;
}

/** Shorten a value for an error message. */
export function show(value: unknown, max = 60): string {
  let s: string;
  if (typeof value === 'string') s = JSON.stringify(value);
  else if (value === undefined) s = 'nothing';
  else {
    try {
      s = JSON.stringify(value) ?? String(value);
    } catch {
      s = String(value);
    }
  }
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}
