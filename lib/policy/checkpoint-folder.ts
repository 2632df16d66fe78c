/**
 * What a policy checkpoint folder says before any policy loads it: whether its weights are all
 * finite (a NaN weight answers nothing useful and every training step on it is skipped), and how
 * the prompts of its training looked (the null option), which `crpo serve` puts in its model card
 * and `crpo eval` follows. Read by the trainer (resume, --init) and the server; written next to a
 * checkpoint by the supervised warm start (lib/train/sft.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { writeFileAtomicSync } from '../data/jsonl';
import { CrpoError } from '../errors';
import { SafetensorsFile } from '../model/safetensors';

/** Weight files of a crpo checkpoint folder (not of a Hugging Face base folder, which can be large). */
const WEIGHT_FILES = [
  'policy.safetensors',
  'model.safetensors',
  path.join('policy', 'model.safetensors'),
  path.join('checkpoint', 'model.safetensors'),
];

/**
 * Throws ERR_CRPO_CHECKPOINT naming the file and tensor when a crpo checkpoint holds a NaN or
 * infinite weight: such a policy answers nothing useful and every training step on it is skipped.
 * Reads each tensor once (crpo checkpoints are small; files over `maxBytes` are not scanned).
 */
export function assertFiniteWeights(dir: string, where: string, maxBytes = 2 * 1024 ** 3): void {
  // A Hugging Face base folder (config.json, large weights) is not a crpo checkpoint: not scanned.
  if (fs.existsSync(path.join(dir, 'config.json')) && !fs.existsSync(path.join(dir, 'policy.safetensors'))) return;
  for (const rel of WEIGHT_FILES) {
    const file = path.join(dir, rel);
    if (!fs.existsSync(file) || fs.statSync(file).size > maxBytes) continue;
    const f = SafetensorsFile.open(file);
    try {
      for (const name of f.names()) {
        const e = f.entry(name);
        if (e.dtype !== 'F32' && e.dtype !== 'F64' && e.dtype !== 'F16' && e.dtype !== 'BF16') continue;
        const x = f.readFloat32(name);
        for (let i = 0; i < x.length; i++) {
          if (!Number.isFinite(x[i])) {
            throw new CrpoError(
              'ERR_CRPO_CHECKPOINT',
              `${where} ${dir}: ${file}: tensor '${name}' holds a ` +
                `non-finite weight (${x[i]} at index ${i}); this checkpoint cannot be served or trained from: use an ` +
                `earlier checkpoint`,
            );
          }
        }
      }
    } finally {
      f.close();
    }
  }
}

/** How the prompts of a checkpoint's training looked, as far as the folder tells (for serving and evaluation). */
export interface TrainingPrompt {
  /** True when the checkpoint was trained with the null option shown. */
  nullOption: boolean;
  /** The file that says so. */
  source: string;
}

export const PROMPT_FILE = 'prompt.json';

/** Records next to a checkpoint how its prompts looked (read back by trainingPromptOf). */
export function writeTrainingPrompt(dir: string, p: { nullOption: boolean }): void {
  writeFileAtomicSync(path.join(dir, PROMPT_FILE), JSON.stringify({ null_option: p.nullOption }, null, 2) + '\n');
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Whether the checkpoint in `dir` was trained with the null option: from its prompt.json or
 * state.json, else from what made it (a `crpo sft` folder's sft-report.json, a run folder's
 * config.yaml: nullOption, 'auto' meaning on for the CRPO family). Undefined when nothing says.
 */
export function trainingPromptOf(dir: string): TrainingPrompt | undefined {
  for (const d of [dir, path.join(dir, 'policy'), path.join(dir, 'checkpoint')]) {
    const p = readJson(path.join(d, PROMPT_FILE)) as { null_option?: unknown } | undefined;
    if (typeof p?.null_option === 'boolean') return { nullOption: p.null_option, source: path.join(d, PROMPT_FILE) };
    const st = readJson(path.join(d, 'state.json')) as { nullOption?: unknown } | undefined;
    if (typeof st?.nullOption === 'boolean') return { nullOption: st.nullOption, source: path.join(d, 'state.json') };
  }
  for (const d of [dir, path.dirname(dir), path.dirname(path.dirname(dir))]) {
    const rep = readJson(path.join(d, 'sft-report.json')) as { options?: { nullOption?: unknown } } | undefined;
    if (typeof rep?.options?.nullOption === 'boolean')
      return { nullOption: rep.options.nullOption, source: path.join(d, 'sft-report.json') };
    const cfgFile = path.join(d, 'config.yaml');
    if (fs.existsSync(path.join(d, 'checkpoints')) && fs.existsSync(cfgFile)) {
      let cfg: { algo?: unknown; nullOption?: unknown } | undefined;
      try {
        cfg = YAML.parse(fs.readFileSync(cfgFile, 'utf8')) as typeof cfg;
      } catch {
        cfg = undefined;
      }
      if (typeof cfg?.nullOption === 'boolean') return { nullOption: cfg.nullOption, source: cfgFile };
      if (cfg?.nullOption === 'auto' && typeof cfg.algo === 'string')
        return { nullOption: CRPO_FAMILY.has(cfg.algo), source: cfgFile };
    }
  }
  return undefined;
}

/** Algorithms whose nullOption 'auto' means on (lib/algo: the CRPO family). */
const CRPO_FAMILY: ReadonlySet<string> = new Set(['crpo', 'crpo-no-dual']);
