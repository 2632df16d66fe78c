/**
 * The `checkpoint` model kind of `crpo eval` (lib/eval/model.ts): a local checkpoint is served by
 * lib/serve on a free 127.0.0.1 port and evaluated through the same OpenAI client as any served
 * model, so a checkpoint and an endpoint are scored by one code path. Importing this module
 * registers the factory.
 */
import { setCheckpointFactory, type AnswerModel, type ModelSpec } from '../eval/model';
import { OpenAIAnswerModel } from '../eval/openai-model';
import { CrpoError } from '../errors';
import { startServer } from './index';

export async function createCheckpointModel(spec: ModelSpec): Promise<AnswerModel> {
  if (!spec.checkpoint) throw new CrpoError('ERR_CRPO_INVALID_ARG', "model kind 'checkpoint' needs --checkpoint <folder>", { userError: true });
  const server = await startServer({ checkpoint: spec.checkpoint, port: 0, apiKey: 'local-eval', maxConcurrent: 256 });
  const client = new OpenAIAnswerModel({ model: server.modelName, baseURL: server.url, apiKey: 'local-eval', temperature: 0, maxTokens: 16, maxRetries: 2, backoffBaseMs: 50 });
  return {
    name: spec.model ?? server.modelName,
    answer: (requests) => client.answer(requests),
    close: async () => {
      await client.close();
      await server.close();
    },
  };
}

setCheckpointFactory(createCheckpointModel);
