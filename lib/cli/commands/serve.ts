/**
 * `crpo serve <checkpoint>`: serves a trained checkpoint (or a base Hugging Face Qwen folder) as an OpenAI-compatible
 * `/v1/chat/completions` endpoint (lib/serve), on 127.0.0.1 unless told otherwise.
 */
import type { Argv } from 'yargs';
import { SERVE_DEFAULTS, startServer } from '../../serve';
import { detectModelFolder } from '../../hf/model-folder';
import { CrpoError } from '../../errors';

export function builder(y: Argv): Argv {
  return y
    .positional('checkpoint', {
      type: 'string',
      describe:
        'Checkpoint folder (policy.safetensors), a run folder (newest checkpoint) or a Hugging Face Qwen2.5-VL / Qwen3-VL folder',
    })
    .option('host', {
      type: 'string',
      default: SERVE_DEFAULTS.host,
      describe: 'Interface to bind (0.0.0.0 exposes it to the network)',
    })
    .option('port', { type: 'number', default: SERVE_DEFAULTS.port, describe: 'Port, 0-65535 (0 picks a free one)' })
    .option('api-key', {
      type: 'string',
      describe: 'Require Authorization: Bearer <key> (default: env CRPO_API_KEY, else none)',
    })
    .option('model-name', { type: 'string', describe: 'Model id to report (default: the checkpoint folder name)' })
    .option('max-body-mb', {
      type: 'number',
      default: SERVE_DEFAULTS.maxBodyBytes / (1024 * 1024),
      describe: 'Largest request body, MiB',
    })
    .option('max-concurrent', {
      type: 'number',
      default: SERVE_DEFAULTS.maxConcurrent,
      describe: 'Requests answered at once (others get 429)',
    })
    .option('max-frames', {
      type: 'number',
      default: SERVE_DEFAULTS.maxFrames,
      describe:
        'Largest number of image ' +
        'parts per request (a native checkpoint samples them down to its training frame count)',
    })
    .option('quiet', {
      type: 'boolean',
      default: false,
      describe:
        'No log line per request (default: one line per ' + 'request on stderr: time, method, path, status, ms)',
    })
    .example(
      'crpo serve crpo-demo/crpo --port 8000',
      'then: crpo eval data.jsonl --base-url http://127.0.0.1:8000/v1 --model crpo',
    )
    .example('crpo serve ./Qwen3-VL-2B-Instruct', 'a base Hugging Face folder, served as is');
}

export async function handler(a: {
  checkpoint: string;
  host: string;
  port: number;
  'api-key'?: string;
  'model-name'?: string;
  'max-body-mb': number;
  'max-concurrent': number;
  'max-frames': number;
  quiet: boolean;
}): Promise<void> {
  // Flags first (before a possibly long model load), each error naming the flag and the range.
  if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) {
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `--port ${a.port}: expected an integer in [0, 65535] (0 picks a ` + `free port)`,
    );
  }
  if (typeof a.host !== 'string' || !/^[A-Za-z0-9.:_-]+$/.test(a.host)) {
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `--host ${JSON.stringify(a.host)}: expected an interface address ` + `such as 127.0.0.1 (local only) or 0.0.0.0`,
    );
  }
  if (!(Number.isFinite(a['max-body-mb']) && a['max-body-mb'] > 0 && a['max-body-mb'] <= 4096)) {
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `--max-body-mb ${a['max-body-mb']}: expected a size in MiB in (0, ` + `4096]`,
    );
  }
  for (const k of ['max-concurrent', 'max-frames'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 1 || a[k] > 4096) {
      throw new CrpoError('ERR_CRPO_INVALID_ARG', `--${k} ${a[k]}: expected an integer in [1, 4096]`);
    }
  }
  // What the folder holds (linear / native / qwen checkpoint, run folder, Hugging Face Qwen folder), or one clear error.
  const found = detectModelFolder(a.checkpoint, 'crpo serve');
  process.stdout.write(`loading ${found.what} from ${found.init}\n`);
  const s = await startServer({
    checkpoint: a.checkpoint,
    host: a.host,
    port: a.port,
    apiKey: a['api-key'] ?? process.env.CRPO_API_KEY,
    modelName: a['model-name'],
    maxBodyBytes: Math.round(a['max-body-mb'] * 1024 * 1024),
    maxConcurrent: a['max-concurrent'],
    maxFrames: a['max-frames'],
    log: a.quiet ? undefined : (line) => process.stderr.write(`serve: ${line}\n`),
  });
  const c = s.card;
  const shape =
    c.frames !== null
      ? `; clips are sampled to ${c.frames} frames of ${c.image_size}x${c.image_size}, ` +
        `context ${c.max_seq_len} tokens`
      : '';
  const nullOpt = c.null_option === null ? 'not recorded' : `${c.null_option ? 'on' : 'off'} (${c.null_option_source})`;
  process.stdout.write(
    `serving '${s.modelName}' at ${s.url} (POST /v1/chat/completions, GET /v1/models)${(a['api-key'] ?? process.env.CRPO_API_KEY) ? ', API key required' : ''}; Ctrl-C stops\n`,
  );
  process.stdout.write(`model card: ${c.kind} policy, trained with the null option: ${nullOpt}${shape}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      void s.close().then(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
