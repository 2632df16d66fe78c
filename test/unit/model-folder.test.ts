/**
 * The `--model <folder>` shorthand (lib/hf/model-folder.ts, lib/cli/commands/{train,serve,eval}.ts):
 * small folders made here (a linear checkpoint saved by the policy itself, native checkpoint
 * markers, run folders, Hugging Face Qwen2.5-VL / Qwen3-VL configs with a weights file) are told
 * apart, and a folder holding none of them is refused with a message naming it and what was looked for.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { detectModelFolder } from '../../lib/hf/model-folder';
import { writeSafetensors } from '../../lib/model/safetensors';
import { LinearPolicy } from '../../lib/policy/linear';
import { overridesFromArgv } from '../../lib/cli/commands/train';

const root = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-model-folder-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const LOOKED_FOR =
  'looked for policy.safetensors (a crpo linear, native or qwen checkpoint), policy.json, policy/policy.json or checkpoint/policy.json (a native checkpoint), ' +
  'checkpoints/step-* (a run folder), or config.json with *.safetensors (a Hugging Face Qwen2.5-VL / Qwen3-VL folder)';

function dir(name: string): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function markerCheckpoint(d: string, kind: string): string {
  fs.mkdirSync(d, { recursive: true });
  writeSafetensors(
    path.join(d, 'policy.safetensors'),
    [{ name: 'w', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }],
    { kind },
  );
  return d;
}

function hfFolder(name: string, config: Record<string, unknown>, weights = true): string {
  const d = dir(name);
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(config));
  if (weights)
    writeSafetensors(
      path.join(d, 'model.safetensors'),
      [{ name: 'lm_head.weight', dtype: 'F32', shape: [1, 2], data: new Float32Array([0, 1]) }],
      { format: 'pt' },
    );
  return d;
}

describe('detectModelFolder', () => {
  it('a linear checkpoint written by the linear policy', async () => {
    const d = dir('linear');
    const p = new LinearPolicy();
    await p.save(d);
    expect(detectModelFolder(d)).toEqual({ kind: 'linear', init: d, what: 'linear checkpoint' });
  });

  it('native and qwen checkpoints by their metadata; the native policy.json layouts', () => {
    expect(detectModelFolder(markerCheckpoint(path.join(tmp, 'native'), 'native')).kind).toBe('native');
    expect(detectModelFolder(markerCheckpoint(path.join(tmp, 'qwen-ck'), 'qwen')).kind).toBe('qwen');
    const j = dir('native-json');
    fs.writeFileSync(path.join(j, 'policy.json'), '{}');
    expect(detectModelFolder(j)).toEqual({ kind: 'native', init: j, what: 'native checkpoint' });
    const sub = dir('native-sub/policy');
    fs.writeFileSync(path.join(sub, 'policy.json'), '{}');
    expect(detectModelFolder(path.dirname(sub)).kind).toBe('native');
  });

  it('a run folder: its newest checkpoint', () => {
    const run = dir('run');
    markerCheckpoint(path.join(run, 'checkpoints', 'step-000002'), 'linear');
    const newest = markerCheckpoint(path.join(run, 'checkpoints', 'step-000010'), 'linear');
    expect(detectModelFolder(run)).toEqual({
      kind: 'linear',
      init: newest,
      what: 'linear checkpoint step-000010 of a run folder',
    });
  });

  it('Hugging Face Qwen2.5-VL and Qwen3-VL folders (config.json + safetensors)', () => {
    const q25 = hfFolder('q25', { model_type: 'qwen2_5_vl' });
    expect(detectModelFolder(q25)).toEqual({
      kind: 'qwen',
      init: q25,
      what: 'Hugging Face qwen2_5_vl folder',
      arch: 'qwen2_5_vl',
    });
    const q3 = hfFolder('q3', { architectures: ['Qwen3VLForConditionalGeneration'] });
    expect(detectModelFolder(q3).arch).toBe('qwen3_vl');
  });

  it('refuses what it cannot use, naming the folder and what was looked for', () => {
    const empty = dir('empty');
    expect(() => detectModelFolder(empty)).toThrow(`--model ${empty}: holds no model; ${LOOKED_FOR}`);
    expect(() => detectModelFolder(path.join(tmp, 'absent'))).toThrow(
      `--model ${path.join(tmp, 'absent')}: no such folder`,
    );
    const noWeights = hfFolder('no-weights', { model_type: 'qwen3_vl' }, false);
    expect(() => detectModelFolder(noWeights)).toThrow(
      `--model ${noWeights}: ${path.join(noWeights, 'config.json')} describes qwen3_vl, but the folder has no *.safetensors weights`,
    );
    expect(() => detectModelFolder(hfFolder('llama', { model_type: 'llama' }))).toThrow(
      /unsupported architecture \(model_type "llama"/,
    );
    const bad = markerCheckpoint(path.join(tmp, 'no-kind'), '');
    expect(() => detectModelFolder(bad, 'crpo serve')).toThrow(
      `crpo serve ${bad}: ${path.join(bad, 'policy.safetensors')} names no policy kind in its metadata`,
    );
    try {
      detectModelFolder(empty);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('ERR_CRPO_MODEL_FOLDER');
    }
  });
});

describe('crpo train --model', () => {
  it('sets policy.kind and policy.init from the folder', () => {
    expect(overridesFromArgv({ model: path.join(tmp, 'q25') }).policy).toEqual({
      kind: 'qwen',
      init: path.join(tmp, 'q25'),
    });
    expect(overridesFromArgv({ model: path.join(tmp, 'run') }).policy).toEqual({
      kind: 'linear',
      init: path.join(tmp, 'run', 'checkpoints', 'step-000010'),
    });
    expect(() => overridesFromArgv({ model: path.join(tmp, 'q25'), policy: 'native' })).toThrow(
      '--model names the policy kind and init itself; drop --policy/--init',
    );
  });

  it('an empty folder is one line on stderr and exit 1 (train, serve, eval --kind checkpoint)', () => {
    const empty = path.join(tmp, 'empty');
    const cli = (...args: string[]) =>
      spawnSync(
        process.execPath,
        ['-r', path.join(root, 'scripts/ts-register.js'), path.join(root, 'test/fixtures/eval-cli.js'), ...args],
        { cwd: root, encoding: 'utf8', timeout: 60000 },
      );
    for (const [args, where] of [
      [['train', '--model', empty, '--steps', '1'], '--model'],
      [['serve', empty], 'crpo serve'],
      [['eval', 'x.jsonl', '--kind', 'checkpoint', '--model', empty], '--model'],
    ] as const) {
      const r = cli(...args);
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(`crpo: ${where} ${empty}: holds no model; ${LOOKED_FOR}\n`);
    }
  }, 90000);
});
