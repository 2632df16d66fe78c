/**
 * `crpo hf init`: writes a random-initialised Hugging Face Qwen2.5-VL / Qwen3-VL folder with the
 * published shapes (lib/hf/init.ts), e.g. `crpo hf init --arch qwen2_5_vl --size 3b --dtype bfloat16
 * --out models/qwen25-3b-random`; the folder works wherever a model folder does (`--model`).
 */
import type { Argv } from 'yargs';
import { CrpoError } from '../../errors';
import { INIT_SIZES, initQwenFolder, type InitDtype } from '../../hf/init';
import type { QwenArch } from '../../hf/config';

export function builder(y: Argv): Argv {
  const sizes = Object.entries(INIT_SIZES)
    .map(([a, s]) => `${a}: ${Object.keys(s).join(', ')}`)
    .join('; ');
  return y
    .positional('action', { type: 'string', choices: ['init'], describe: 'What to do' })
    .option('arch', { type: 'string', choices: ['qwen2_5_vl', 'qwen3_vl'], demandOption: true, describe: 'Model' })
    .option('size', { type: 'string', demandOption: true, describe: `Published shape (${sizes})` })
    .option('dtype', { type: 'string', choices: ['bfloat16', 'float32'], default: 'bfloat16', describe: 'dtype' })
    .option('seed', { type: 'number', default: 0, describe: 'Seed of the random weights' })
    .option('out', { type: 'string', demandOption: true, describe: 'New (or empty) folder to write' })
    .example(
      'crpo hf init --arch qwen2_5_vl --size 3b --out models/q25-3b',
      'Qwen2.5-VL-3B shapes, bf16, random weights',
    )
    .example('crpo train --model models/q25-3b --data train.jsonl', 'train it like a downloaded checkpoint');
}

interface Args {
  action: string;
  arch: QwenArch;
  size: string;
  dtype: InitDtype;
  seed: number;
  out: string;
}

export function handler(a: Args): void {
  if (a.action !== 'init') throw new CrpoError('ERR_CRPO_INVALID_ARG', `Unknown hf action '${a.action}' (known: init)`);
  const t0 = Date.now();
  const o = { arch: a.arch, size: String(a.size).toLowerCase(), dtype: a.dtype, seed: a.seed, out: a.out };
  const r = initQwenFolder(o, (line) => process.stderr.write(line + '\n'));
  const gib = (r.bytes / 2 ** 30).toFixed(2);
  const seconds = ((Date.now() - t0) / 1000).toFixed(1);
  process.stdout.write(
    `${r.folder}: ${a.arch} ${a.size}, ${r.parameters.toLocaleString('en-US')} parameters, ` +
      `model.safetensors ${gib} GiB (${a.dtype}), config.json, tokenizer.json, tokenizer_config.json, ` +
      `generation_config.json; ${seconds} s\n`,
  );
}
