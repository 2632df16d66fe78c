/**
 * What a model folder holds, for the `--model <folder>` shorthand of `crpo train`, `crpo serve`
 * and `crpo eval --kind checkpoint`: a crpo checkpoint (policy.safetensors whose metadata names
 * the policy kind: linear, native or qwen; or the native policy's policy.json), a run folder (its
 * newest checkpoints/step-*), or a Hugging Face Qwen2.5-VL / Qwen3-VL folder (config.json naming
 * one of those architectures, next to *.safetensors weights). The answer is the policy kind and the
 * folder to pass as `policy.init`, so `--model X` means `--policy <kind> --init X`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import { readSafetensorsHeader } from '../model/safetensors';
import { detectArch, type QwenArch } from './config';

export interface ModelFolder {
  /** Policy kind (POLICY_KINDS name): 'linear', 'native' or 'qwen'. */
  kind: string;
  /** The folder to load: `dir` itself, or the newest checkpoint of a run folder. */
  init: string;
  /** What was found, for messages: e.g. "linear checkpoint", "Hugging Face qwen3_vl folder". */
  what: string;
  /** For Hugging Face folders: the architecture named by config.json. */
  arch?: QwenArch;
}

const LOOKED_FOR =
  'policy.safetensors (a crpo linear, native or qwen checkpoint), policy.json, policy/policy.json or ' +
  'checkpoint/policy.json (a native checkpoint), ' +
  'checkpoints/step-* (a run folder), or config.json with *.safetensors (a Hugging Face Qwen2.5-VL / Qwen3-VL folder)';

/** `where` names the argument in messages: '--model' (default), '--checkpoint', 'crpo serve'. */
function folderError(dir: string, why: string, where = '--model'): CrpoError {
  return new CrpoError('ERR_CRPO_MODEL_FOLDER', `${where} ${dir}: ${why}`, { userError: true });
}

/** Kind of a crpo checkpoint folder, or null when `dir` holds none. */
function checkpointKind(dir: string, where: string): string | null {
  const file = path.join(dir, 'policy.safetensors');
  if (fs.existsSync(file)) {
    const kind = readSafetensorsHeader(file).metadata?.kind;
    if (!kind)
      throw folderError(
        dir,
        `${file} names no policy kind in its metadata (expected kind 'linear', 'native' or 'qwen')`,
        where,
      );
    return kind;
  }
  // policy/ in a training checkpoint or sftBase folder, checkpoint/ in a `crpo sft` folder.
  if (['policy.json', 'policy/policy.json', 'checkpoint/policy.json'].some((f) => fs.existsSync(path.join(dir, f))))
    return 'native';
  return null;
}

/**
 * Detects what `dir` holds. Throws ERR_CRPO_MODEL_FOLDER naming the folder and what was looked
 * for when it holds none of them, or what is wrong with what it holds (an unsupported config.json,
 * a config.json without weights).
 */
export function detectModelFolder(dir: string, where = '--model'): ModelFolder {
  if (typeof dir !== 'string' || dir === '') throw folderError(String(dir), 'expected a folder path', where);
  if (!fs.existsSync(dir)) throw folderError(dir, 'no such folder', where);
  if (!fs.statSync(dir).isDirectory()) throw folderError(dir, 'not a folder', where);
  const kind = checkpointKind(dir, where);
  if (kind) return { kind, init: dir, what: `${kind} checkpoint` };
  const config = path.join(dir, 'config.json');
  if (fs.existsSync(config)) {
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(fs.readFileSync(config, 'utf8'));
    } catch (err) {
      throw folderError(dir, `${config} is not valid JSON (${(err as Error).message})`, where);
    }
    const arch = detectArch(raw, config);
    const weights = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors'));
    if (!weights.length)
      throw folderError(dir, `${config} describes ${arch}, but the folder has no *.safetensors weights`, where);
    return { kind: 'qwen', init: dir, what: `Hugging Face ${arch} folder`, arch };
  }
  const ck = path.join(dir, 'checkpoints');
  if (fs.existsSync(ck)) {
    const steps = fs
      .readdirSync(ck)
      .filter((n) => /^step-\d+$/.test(n))
      .sort();
    for (let i = steps.length - 1; i >= 0; i--) {
      const sub = path.join(ck, steps[i]);
      const k = checkpointKind(sub, where);
      if (k) return { kind: k, init: sub, what: `${k} checkpoint ${steps[i]} of a run folder` };
    }
  }
  throw folderError(dir, `holds no model; looked for ${LOOKED_FOR}`, where);
}
