#!/usr/bin/env node
/**
 * Prints the import graph between the folders of lib/ (one node per folder; files at the top of
 * lib/ are nodes of their own), read from the `import ... from` / `require(...)` / `import(...)`
 * / `export ... from` lines of the TypeScript sources. Used to keep docs/architecture.md true.
 *
 *   node scripts/import-graph.js            edges "from -> to  (n imports)" with the importing files
 *   node scripts/import-graph.js --summary  one line per folder: what it imports
 *   node scripts/import-graph.js --wrong    only the arrows the layer rules below do not allow
 *   node scripts/import-graph.js --json     every edge as JSON
 * `--wrong` exits 1 when it prints anything. The layers are those of docs/architecture.md.
 */
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

// docs/architecture.md, "Layers": a folder may import from lower layers only, plus the same-layer
// arrows listed in SIDEWAYS. Folders not listed here (new ones) are reported until they are added.
const LAYERS = [
  ['errors.ts', 'random.ts'],
  ['threads.ts', 'native-types.ts'],
  ['registry.ts', 'native.ts'],
  ['counterfactual'],
  ['prompt', 'data', 'reward', 'distributed'],
  ['video', 'router', 'algo'],
  ['synth', 'dybench'],
  ['model', 'hf'],
  ['policy'],
  ['eval'],
  ['train', 'serve', 'reproduce', 'bench'],
  ['cli', 'index.ts'],
];
const SIDEWAYS = new Set(['hf -> model', 'reproduce -> train', 'bench -> train', 'index.ts -> cli']);
const layerOf = new Map(LAYERS.flatMap((names, i) => names.map((n) => [n, i])));

/** Why the arrow from -> to breaks the layer rules, or undefined when it is allowed. */
function wrongWay(from, to) {
  const a = layerOf.get(from),
    b = layerOf.get(to);
  if (a === undefined || b === undefined) return `${a === undefined ? from : to} is in no layer`;
  if (b < a || SIDEWAYS.has(`${from} -> ${to}`)) return undefined;
  return b === a ? 'same layer' : `layer ${a} imports layer ${b}`;
}
const lib = path.join(root, 'lib');

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** lib/train/data.ts -> 'train'; lib/native.ts -> 'native.ts'. */
function nodeOf(file) {
  const rel = path.relative(lib, file).split(path.sep);
  return rel.length === 1 ? rel[0] : rel[0];
}

function resolveImport(from, spec) {
  if (!spec.startsWith('.')) return null; // a package or a Node built-in
  const base = path.resolve(path.dirname(from), spec);
  for (const c of [base + '.ts', path.join(base, 'index.ts'), base]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return null;
}

// Static imports and re-exports (also `import type`), require() and dynamic import().
const IMPORT_RE =
  /(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|require\(\s*['"]([^'"]+)['"]\s*\)|import\(\s*['"]([^'"]+)['"]\s*\)/g;

const edges = new Map(); // "from\tto" -> { count, typeOnly, files:Set }
for (const file of walk(lib)) {
  const src = fs.readFileSync(file, 'utf8');
  for (const m of src.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3];
    const target = resolveImport(file, spec);
    if (!target || !target.startsWith(lib + path.sep)) continue;
    const a = nodeOf(file),
      b = nodeOf(target);
    if (a === b) continue;
    const typeOnly = /^\s*(?:import|export)\s+type\s/.test(m[0].replace(/^\n/, ''));
    const key = `${a}\t${b}`;
    const e = edges.get(key) ?? { count: 0, typeOnly: true, files: new Set() };
    e.count++;
    e.typeOnly = e.typeOnly && typeOnly;
    e.files.add(path.relative(root, file));
    edges.set(key, e);
  }
}

const rows = [...edges]
  .map(([k, e]) => {
    const [from, to] = k.split('\t');
    return { from, to, imports: e.count, typeOnly: e.typeOnly, files: [...e.files].sort() };
  })
  .sort((x, y) => x.from.localeCompare(y.from) || x.to.localeCompare(y.to));

const arg = process.argv[2];
if (arg === '--wrong') {
  const bad = rows.map((r) => ({ ...r, why: wrongWay(r.from, r.to) })).filter((r) => r.why);
  for (const r of bad) process.stdout.write(`${r.from} -> ${r.to}  (${r.why})  ${r.files.join(' ')}\n`);
  process.exitCode = bad.length ? 1 : 0;
} else if (arg === '--json') {
  process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
} else if (arg === '--summary') {
  const by = new Map();
  for (const r of rows) by.set(r.from, [...(by.get(r.from) ?? []), r.to + (r.typeOnly ? ' (types)' : '')]);
  for (const [from, tos] of by) process.stdout.write(`${from.padEnd(16)} -> ${tos.join(', ')}\n`);
} else {
  for (const r of rows) {
    process.stdout.write(
      `${r.from} -> ${r.to}  (${r.imports}${r.typeOnly ? ', types only' : ''})  ${r.files.join(' ')}\n`,
    );
  }
}
