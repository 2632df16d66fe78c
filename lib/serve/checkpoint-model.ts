/**
 * The `checkpoint` model kind of `crpo eval` (lib/eval/model.ts): a local checkpoint is served by
 * lib/serve on a free 127.0.0.1 port and evaluated through the same OpenAI client as any served
 * model, so a checkpoint and an endpoint are scored by one code path. The client settings of the
 * spec (timeout, retries, backoff, max tokens, temperature, JPEG quality, detail) apply as they do
 * for `--kind openai`. Importing this module registers the factory.
 */
import { setCheckpointFactory, type AnswerModel, type ModelSpec } from '../eval/model';
import { OpenAIAnswerModel, type OpenAIModelOptions } from '../eval/openai-model';
import { CrpoError } from '../errors';
import { startServer } from './index';

/** Client settings a spec may carry (the rest of OpenAIModelOptions is fixed by the local server). */
const CLIENT_KEYS = [
  'timeoutMs',
  'maxRetries',
  'backoffBaseMs',
  'backoffMaxMs',
  'maxTokens',
  'temperature',
  'jpegQuality',
  'imageDetail',
  'seed',
] as const;

export async function createCheckpointModel(spec: ModelSpec): Promise<AnswerModel> {
  if (!spec.checkpoint)
    throw new CrpoError('ERR_CRPO_INVALID_ARG', "model kind 'checkpoint' needs --checkpoint <folder>", {
      userError: true,
    });
  const client: Partial<OpenAIModelOptions> = { maxRetries: 2, backoffBaseMs: 50 };
  for (const k of CLIENT_KEYS) if (spec[k] !== undefined) (client as Record<string, unknown>)[k] = spec[k];
  const server = await startServer({
    checkpoint: spec.checkpoint,
    port: 0,
    apiKey: 'local-eval',
    maxConcurrent: 256,
    log: spec.serverLog as ((l: string) => void) | undefined,
  });
  let model: OpenAIAnswerModel;
  try {
    model = new OpenAIAnswerModel({ ...client, model: server.modelName, baseURL: server.url, apiKey: 'local-eval' });
  } catch (err) {
    await server.close();
    throw err;
  }
  return {
    name: spec.model ?? server.modelName,
    answer: (requests) => model.answer(requests),
    promptDefaults: async () =>
      server.card.null_option === null
        ? {}
        : { nullOption: server.card.null_option, source: server.card.null_option_source ?? spec.checkpoint! },
    close: async () => {
      await model.close();
      await server.close();
    },
  };
}

setCheckpointFactory(createCheckpointModel);
