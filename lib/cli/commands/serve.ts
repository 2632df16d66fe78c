/**
 * `crpo serve <checkpoint>`: serves a trained checkpoint (or a base Hugging Face Qwen folder) as an OpenAI-compatible
 * `/v1/chat/completions` endpoint (lib/serve), on 127.0.0.1 unless told otherwise.
 */
import type { Argv } from 'yargs';
import { SERVE_DEFAULTS, startServer } from '../../serve';
import { detectModelFolder } from '../../hf/model-folder';

export function builder(y: Argv): Argv {
  return y
    .positional('checkpoint', { type: 'string', describe: 'Checkpoint folder (policy.safetensors), a run folder (newest checkpoint) or a Hugging Face Qwen2.5-VL / Qwen3-VL folder' })
    .option('host', { type: 'string', default: SERVE_DEFAULTS.host, describe: 'Interface to bind (0.0.0.0 exposes it to the network)' })
    .option('port', { type: 'number', default: SERVE_DEFAULTS.port, describe: 'Port' })
    .option('api-key', { type: 'string', describe: 'Require Authorization: Bearer <key> (default: env CRPO_API_KEY, else none)' })
    .option('model-name', { type: 'string', describe: 'Model id to report (default: the checkpoint folder name)' })
    .option('max-body-mb', { type: 'number', default: SERVE_DEFAULTS.maxBodyBytes / (1024 * 1024), describe: 'Largest request body, MiB' })
    .option('max-concurrent', { type: 'number', default: SERVE_DEFAULTS.maxConcurrent, describe: 'Requests answered at once (others get 429)' })
    .option('max-frames', { type: 'number', default: SERVE_DEFAULTS.maxFrames, describe: 'Largest number of image parts per request' })
    .example('crpo serve crpo-demo/crpo --port 8000', 'then: crpo eval data.jsonl --base-url http://127.0.0.1:8000/v1 --model crpo')
    .example('crpo serve ./Qwen3-VL-2B-Instruct', 'a base Hugging Face folder, served as is');
}

export async function handler(a: { checkpoint: string; host: string; port: number; 'api-key'?: string; 'model-name'?: string; 'max-body-mb': number; 'max-concurrent': number; 'max-frames': number }): Promise<void> {
  // What the folder holds (linear / native / qwen checkpoint, run folder, Hugging Face Qwen folder), or one clear error.
  const found = detectModelFolder(a.checkpoint, 'crpo serve');
  process.stdout.write(`loading ${found.what} from ${found.init}\n`);
  const s = await startServer({
    checkpoint: a.checkpoint, host: a.host, port: a.port, apiKey: a['api-key'] ?? process.env.CRPO_API_KEY, modelName: a['model-name'],
    maxBodyBytes: Math.round(a['max-body-mb'] * 1024 * 1024), maxConcurrent: a['max-concurrent'], maxFrames: a['max-frames'],
  });
  process.stdout.write(`serving '${s.modelName}' at ${s.url} (POST /v1/chat/completions, GET /v1/models)${a['api-key'] ?? process.env.CRPO_API_KEY ? ', API key required' : ''}; Ctrl-C stops\n`);
  await new Promise<void>((resolve) => {
    const stop = () => { void s.close().then(resolve); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
