// Where commands print: injected so tests can capture output of `main()` without a subprocess.
export interface CliIO {
  out(text: string): void;
  err(text: string): void;
}

let pipeGuard = false;

export function processIO(): CliIO {
  if (!pipeGuard) {
    pipeGuard = true;
    // `edgeexit run … | head` closes stdout early: stop writing quietly instead of crashing.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
  return {
    out: (t) => void process.stdout.write(t.endsWith('\n') ? t : t + '\n'),
    err: (t) => void process.stderr.write(t.endsWith('\n') ? t : t + '\n'),
  };
}
