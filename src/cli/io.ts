// Where commands print: injected so tests can capture output of `main()` without a subprocess.
export interface CliIO {
  out(text: string): void;
  err(text: string): void;
}

export function processIO(): CliIO {
  return {
    out: (t) => void process.stdout.write(t.endsWith('\n') ? t : t + '\n'),
    err: (t) => void process.stderr.write(t.endsWith('\n') ? t : t + '\n'),
  };
}
