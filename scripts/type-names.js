#!/usr/bin/env node
/**
 * Lists the type names that mean two things in lib/: an exported interface, type alias, class or
 * enum name under which two lib/ modules export different declarations (docs/architecture.md,
 * "Target layout": no two modules export the same type name with different shapes). A re-export of
 * the same declaration (lib/index.ts, a folder's index.ts) is one meaning, not two; a re-export
 * under another name (`export { type A as B }`) counts under the new name.
 *
 *   node scripts/type-names.js          one line per name that means two things; exit 1 if any
 *   node scripts/type-names.js --json   every exported type name with its declarations, as JSON
 *   --root <dir>                        check another project (its tsconfig.json and lib/; tests)
 *
 * A declaration marked `@deprecated` (a transitional alias kept for files edited on other branches)
 * does not fail the check: it is listed on stderr as a note, so that it is removed once unused.
 * Uses the TypeScript compiler API on the files of tsconfig.json (a few seconds).
 */
'use strict';
const path = require('path');
const ts = require('typescript');

const args = process.argv.slice(2);
const rootAt = args.indexOf('--root');
const root = rootAt >= 0 ? path.resolve(args[rootAt + 1] ?? '') : path.resolve(__dirname, '..');
const lib = path.join(root, 'lib') + path.sep;
const rel = (file) => path.relative(root, file).split(path.sep).join('/');

function loadProgram() {
  const host = {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  };
  const config = ts.getParsedCommandLineOfConfigFile(path.join(root, 'tsconfig.json'), {}, host);
  return ts.createProgram(config.fileNames, { ...config.options, noEmit: true });
}

/** 'interface' | 'type' | 'class' | 'enum' for a declaration that names a type, else undefined. */
function typeKind(decl) {
  if (ts.isInterfaceDeclaration(decl)) return 'interface';
  if (ts.isTypeAliasDeclaration(decl)) return 'type';
  if (ts.isClassDeclaration(decl)) return 'class';
  if (ts.isEnumDeclaration(decl)) return 'enum';
  return undefined;
}

/**
 * name -> Map(declaration symbol -> { kinds, files (where declared), exporters, deprecated }) over
 * every lib/ module's exports.
 */
function exportedTypeNames(program) {
  const checker = program.getTypeChecker();
  const byName = new Map();
  for (const sf of program.getSourceFiles()) {
    if (!sf.fileName.startsWith(lib) || sf.isDeclarationFile) continue;
    const moduleSymbol = checker.getSymbolAtLocation(sf);
    if (!moduleSymbol) continue;
    for (const exported of checker.getExportsOfModule(moduleSymbol)) {
      const target = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
      const decls = (target.declarations ?? []).filter((d) => typeKind(d));
      if (!decls.length || !decls[0].getSourceFile().fileName.startsWith(lib)) continue;
      const name = exported.name;
      if (!byName.has(name)) byName.set(name, new Map());
      const meanings = byName.get(name);
      if (!meanings.has(target)) {
        meanings.set(target, {
          kinds: [...new Set(decls.map(typeKind))],
          files: [...new Set(decls.map((d) => rel(d.getSourceFile().fileName)))],
          exporters: [],
          deprecated: target.getJsDocTags(checker).some((t) => t.name === 'deprecated'),
        });
      }
      meanings.get(target).exporters.push(rel(sf.fileName));
    }
  }
  return byName;
}

const describe = (m) => `${m.files.join(', ')} (${m.kinds.join(' + ')}${m.deprecated ? ', deprecated' : ''})`;

function main() {
  const byName = exportedTypeNames(loadProgram());
  if (args.includes('--json')) {
    const out = {};
    for (const [name, meanings] of [...byName].sort(([a], [b]) => a.localeCompare(b)))
      out[name] = [...meanings.values()];
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return;
  }
  let twins = 0;
  for (const [name, meanings] of [...byName].sort(([a], [b]) => a.localeCompare(b))) {
    const all = [...meanings.values()];
    const current = all.filter((m) => !m.deprecated);
    if (all.length < 2) continue;
    if (current.length > 1) {
      twins++;
      process.stdout.write(`${name}: ${all.map(describe).join('; ')}\n`);
    } else {
      process.stderr.write(`note: ${name}: ${all.map(describe).join('; ')} (remove the deprecated alias)\n`);
    }
  }
  process.exitCode = twins ? 1 : 0;
}

main();
