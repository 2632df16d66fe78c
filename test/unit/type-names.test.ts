/**
 * scripts/type-names.js (in `npm run lint`): lists an exported type name that two lib/ modules
 * declare differently, and exits 1; a re-export of the same declaration is one meaning; a
 * re-export under another name counts under that name; a `@deprecated` alias is a note on stderr,
 * not a failure. Runs on small projects written to a temporary folder (--root).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const SCRIPT = path.resolve(__dirname, '../../scripts/type-names.js');

/** Writes tsconfig.json and lib/<name>.ts files, runs the script on them. */
function check(files: Record<string, string>): { code: number | null; stdout: string; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-type-names-'));
  try {
    fs.mkdirSync(path.join(dir, 'lib'));
    const tsconfig = { compilerOptions: { strict: true, module: 'commonjs', noEmit: true }, include: ['lib/**/*.ts'] };
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, 'lib', name), text);
    const r = spawnSync(process.execPath, [SCRIPT, '--root', dir], { encoding: 'utf8' });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('scripts/type-names.js', () => {
  it('lists a name two modules declare differently and exits 1', () => {
    const r = check({
      'a.ts': 'export interface Prompt { video: number }\nexport type Only = 1;\n',
      'b.ts': 'export class Prompt { text = "" }\n',
    });
    expect(r.stdout).toBe('Prompt: lib/a.ts (interface); lib/b.ts (class)\n');
    expect(r.code).toBe(1);
  });

  it('counts re-exports of one declaration once, and a renamed re-export under its new name', () => {
    const r = check({
      'a.ts': 'export interface Prompt { video: number }\n',
      'index.ts': "export { type Prompt } from './a';\nexport * from './a';\n",
      'b.ts': 'export interface TrainPrompt { text: string }\n',
      'c.ts': "export { type Prompt as TrainPrompt } from './a';\n",
    });
    expect(r.stdout).toBe('TrainPrompt: lib/b.ts (interface); lib/a.ts (interface)\n');
    expect(r.code).toBe(1);
  });

  it('passes a deprecated alias with a note on stderr', () => {
    const r = check({
      'a.ts': 'export interface Policy { kind: string }\n',
      'b.ts': 'export class Model {}\n/** @deprecated the old name of Model */\nexport type Policy = Model;\n',
    });
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('note: Policy: lib/a.ts (interface); lib/b.ts (type, deprecated)');
    expect(r.code).toBe(0);
  });
});
