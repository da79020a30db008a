// Every function and class the package exports (through any entry of package.json "exports")
// carries TSDoc with a usage example, so editors show one where it is used.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

/** The source index behind each exports entry: ./dist/x/index.d.ts → src/x/index.ts. */
function entrySources(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, string | { types: string }> };
  return Object.values(pkg.exports)
    .flatMap((t) => (typeof t === 'string' ? [] : [t.types]))
    .map((t) => path.join(ROOT, t.replace(/^\.\/dist\//, 'src/').replace(/\.d\.ts$/, '.ts')));
}

function declarationWithDocs(decl: ts.Declaration): ts.Node | undefined {
  if (ts.isFunctionDeclaration(decl) || ts.isClassDeclaration(decl)) return decl;
  // `export const f = () => …`: the docs sit on the variable statement.
  if (ts.isVariableDeclaration(decl) && decl.initializer && (ts.isArrowFunction(decl.initializer) || ts.isFunctionExpression(decl.initializer))) return decl.parent.parent;
  return undefined;
}

describe('public API docs', () => {
  it('every exported function and class has TSDoc with an @example', () => {
    const entries = entrySources();
    const program = ts.createProgram(entries, { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, noEmit: true, skipLibCheck: true });
    const checker = program.getTypeChecker();
    const missing = new Set<string>();
    let checked = 0;
    for (const entry of entries) {
      const sf = program.getSourceFile(entry);
      expect(sf, `${path.relative(ROOT, entry)} (named by package.json exports)`).toBeDefined();
      for (const exported of checker.getExportsOfModule(checker.getSymbolAtLocation(sf!)!)) {
        const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
        const decl = symbol.declarations?.[0];
        const node = decl && declarationWithDocs(decl);
        if (!node) continue;
        checked++;
        if (!ts.getJSDocTags(node).some((t) => t.tagName.text === 'example')) {
          const file = path.relative(ROOT, node.getSourceFile().fileName);
          missing.add(`${symbol.name} (${file}:${node.getSourceFile().getLineAndCharacterOfPosition(node.getStart()).line + 1})`);
        }
      }
    }
    // The walk found the API (a broken walk would pass vacuously).
    expect(checked).toBeGreaterThan(50);
    expect([...missing]).toEqual([]);
  });
});
