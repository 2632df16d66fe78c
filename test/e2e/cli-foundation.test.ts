/**
 * The CLI and loader as a user meets them: `crpo doctor --json`, a one-line message for a usage
 * error, and the loader's single message with the exact fix when an addon cannot load.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '../..');
const register = path.join(root, 'scripts/ts-register.js');

function runTs(code: string, env: Record<string, string> = {}) {
  return spawnSync(process.execPath, ['-r', register, '-e', code], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
}

function crpo(args: string[]) {
  const code = `require(${JSON.stringify(path.join(root, 'lib/cli/main.ts'))}).main(${JSON.stringify(args)})`;
  return runTs(code);
}

describe('crpo CLI', () => {
  it('doctor --json reports the addons and where they loaded from', () => {
    const r = crpo(['doctor', '--json']);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    const core = report.addons.find((a: { name: string }) => a.name === 'core');
    expect(core.loaded).toBe(true);
    expect(fs.existsSync(core.path)).toBe(true);
    expect(report.node).toBe(process.version);
  });

  it('an unknown command prints one line and exits 1', () => {
    const r = crpo(['frobnicate']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/crpo: Unknown argument: frobnicate/);
  });
});

describe('addon loader', () => {
  it('explains an addon that fails to load, with the exact fix, in one message', () => {
    const bogus = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-')), 'crpo_torch.node');
    fs.writeFileSync(bogus, 'not an ELF file');
    const code = `const n = require(${JSON.stringify(path.join(root, 'lib/native.ts'))});
      const s = n.addonStatus().find((a) => a.name === 'torch');
      try { n.ops('torch'); } catch (e) { console.log(JSON.stringify({ s, code: e.code, message: e.message })); }`;
    const r = runTs(code, { CRPO_TORCH_ADDON: bogus });
    const out = JSON.parse(r.stdout.trim());
    expect(out.s.loaded).toBe(false);
    expect(out.code).toBe('ERR_CRPO_ADDON_MISSING');
    expect(out.message).toContain(bogus);
    expect(out.message).toMatch(/Fix: .*apt-get install libtorch-dev, or set LIBTORCH=\/path\/to\/libtorch/);
  });
});
