// Where the installed edgeexit package is, and its version: device profiles, the zoo and the
// calibration images ship inside it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'edgeexit';

let cachedRoot: string | undefined;

/**
 * The package root: the nearest folder above this module whose package.json is edgeexit's.
 * Walking up (rather than a fixed `../..`) keeps it right from src/ under vitest, from dist/
 * after `tsc -p tsconfig.build.json`, from dist/src/ after `tsc -p tsconfig.json` and from the bundled CLI in dist/bin/.
 */
export function packageRoot(): string {
  cachedRoot ??= findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));
  return cachedRoot;
}

/** The nearest folder at or above `startDir` holding edgeexit's package.json. */
export function findPackageRoot(startDir: string): string {
  let dir = path.resolve(startDir);
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === PACKAGE_NAME) return dir;
      } catch {
        // A broken package.json on the way up is somebody else's; keep looking.
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the ${PACKAGE_NAME} package root at or above ${startDir}`);
    dir = parent;
  }
}
