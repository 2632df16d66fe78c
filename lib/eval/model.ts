/**
 * The interface every evaluation target implements (a served OpenAI-compatible endpoint, a local
 * checkpoint), and the registry of model kinds `crpo eval --kind` chooses from. A model receives
 * decoded frames plus the formatted prompt (lib/prompt formatPrompt, lettered options and the
 * optional null option, crpo-method.md section 3) and returns raw text; the runner parses it with
 * lib/prompt parseAnswer, strictly.
 */
import { CrpoError } from '../errors';
import { Registry } from '../registry';

/** One video-question to answer. */
export interface AnswerRequest {
  /** Record id (unique in the dataset). */
  id: string;
  /** uint8 RGB frames, row-major [T, H, W, 3]. */
  frames: Uint8Array;
  frameShape: [number, number, number, 3];
  question: string;
  /** The record's options, as given (without the null option). */
  options: string[];
  /** The full text prompt: question, lettered options (plus the null option when enabled), instruction. */
  prompt: string;
}

/** The model's reply to one request. */
export interface AnswerResponse {
  /** Raw response text (parsed by the runner; '' when the request failed). */
  raw: string;
  /** Wall time of the request including retries, ms. */
  latencyMs: number;
  /** Set when the request failed for good (after retries); the sample is then not finished. */
  error?: string;
  /** Number of attempts made (1 = no retry). */
  attempts?: number;
  /** Reasoning the server returned apart from the answer text (e.g. `reasoning_content`), kept for inspection only. */
  reasoning?: string;
}

/** How the model expects its prompts, as far as it says (a crpo server's model card). */
export interface PromptDefaults {
  /** The checkpoint was trained with the null option shown. */
  nullOption?: boolean;
  /** Where that comes from, for the log line. */
  source?: string;
}

/** A model under evaluation. `answer` returns one response per request, in order. */
export interface AnswerModel {
  readonly name: string;
  answer(requests: AnswerRequest[]): Promise<AnswerResponse[]>;
  /** What the model says about its prompts; the runner follows it unless the user set the option. */
  promptDefaults?(): Promise<PromptDefaults>;
  close?(): Promise<void>;
}

/** Options every model kind receives (kinds read what they need and ignore the rest). */
export interface ModelSpec {
  /** Model name (served model id, or checkpoint name). */
  model?: string;
  /** OpenAI-compatible base URL, e.g. http://localhost:8000/v1. */
  baseURL?: string;
  apiKey?: string;
  /** Checkpoint path for local models. */
  checkpoint?: string;
  /** Further kind-specific settings. */
  [key: string]: unknown;
}

export type ModelFactory = (spec: ModelSpec) => AnswerModel | Promise<AnswerModel>;

/** Model kinds by name: 'openai' (lib/eval/openai-model.ts) and 'checkpoint' (a local trained policy). */
export const MODEL_KINDS = new Registry<ModelFactory>('model kind');

/**
 * Placeholder for local checkpoints until the trainer registers its factory with
 * `setCheckpointFactory`; it throws one clear error instead of guessing.
 */
let checkpointFactory: ModelFactory | undefined;

/** The trainer calls this once to plug a local checkpoint into `crpo eval --kind checkpoint`. */
export function setCheckpointFactory(factory: ModelFactory): void {
  if (typeof factory !== 'function')
    throw new CrpoError('ERR_CRPO_INVALID_ARG', 'setCheckpointFactory expects a function (spec) => AnswerModel');
  checkpointFactory = factory;
}

MODEL_KINDS.register('checkpoint', (spec) => {
  if (!checkpointFactory) {
    throw new CrpoError(
      'ERR_CRPO_NOT_AVAILABLE',
      `model kind 'checkpoint' is not available yet: no local policy loader is registered in this build${spec.checkpoint ? ` (asked for ${spec.checkpoint})` : ''}; evaluate a served model with --kind openai`,
      { op: 'eval' },
    );
  }
  return checkpointFactory(spec);
});

/** Creates a model of the given kind ('openai' | 'checkpoint' | anything registered later). */
export async function createModel(kind: string, spec: ModelSpec): Promise<AnswerModel> {
  if (kind === 'openai' && !MODEL_KINDS.has('openai')) {
    // The OpenAI adapter registers itself on import; imported lazily so that the library does
    // not load the `openai` client unless it is used.
    await import('./openai-model');
  }
  return MODEL_KINDS.get(kind)(spec);
}
