/**
 * The chat template of a Hugging Face model folder, rendered with @huggingface/jinja (a Jinja
 * implementation made for chat templates, with transformers' trim_blocks / lstrip_blocks and its
 * `raise_exception`). The template is looked up where transformers' processors look:
 * `chat_template.jinja`, then `chat_template.json` ("chat_template"), then tokenizer_config.json
 * ("chat_template": a string, or a list of {name, template} of which 'default' is used). A folder
 * without one (the golden test folders) gets the hand-written ChatML of processor.renderChat.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import type { QwenArch } from './config';
import { renderChat, type ChatMessage } from './processor';

export interface ChatTemplate {
  /** The file the template came from, or 'built-in ChatML' when the folder has none. */
  readonly source: string;
  /** The chat text of `messages` (special tokens as text), ending with the assistant header when asked. */
  render(messages: ChatMessage[], addGenerationPrompt?: boolean): string;
}

interface JinjaTemplate {
  render(items?: Record<string, unknown>): string;
}

function templateError(file: string, why: string): CrpoError {
  return new CrpoError('ERR_CRPO_CHAT_TEMPLATE', `${file}: ${why}`, { userError: true });
}

function readJson(file: string): Record<string, unknown> {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw templateError(file, `cannot read it (${(e as Error).message})`);
  }
}

/** A "chat_template" value: a string, or transformers' list of named templates ('default' is used). */
function pickTemplate(value: unknown, file: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = (value as Array<{ name?: unknown; template?: unknown } | null>).find((t) => t?.name === 'default');
    if (named && typeof named.template === 'string') return named.template;
    throw templateError(file, "chat_template is a list of named templates without a 'default' one");
  }
  throw templateError(file, `chat_template must be a string but is ${JSON.stringify(value).slice(0, 60)}`);
}

/** The folder's chat template text and its file, or undefined when the folder has none. */
export function findChatTemplate(folder: string): { text: string; file: string } | undefined {
  const jinja = path.join(folder, 'chat_template.jinja');
  if (fs.existsSync(jinja)) return { text: fs.readFileSync(jinja, 'utf8'), file: jinja };
  for (const name of ['chat_template.json', 'tokenizer_config.json']) {
    const file = path.join(folder, name);
    if (!fs.existsSync(file)) continue;
    const text = pickTemplate(readJson(file).chat_template, file);
    if (text !== undefined) return { text, file };
  }
  return undefined;
}

/** tokenizer_config.json's special tokens (bos_token, eos_token, ...), which transformers passes to the template. */
function specialTokens(folder: string): Record<string, string> {
  const file = path.join(folder, 'tokenizer_config.json');
  if (!fs.existsSync(file)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(readJson(file))) {
    if (!k.endsWith('_token')) continue;
    if (typeof v === 'string') out[k] = v;
    else if (v && typeof (v as { content?: unknown }).content === 'string') out[k] = (v as { content: string }).content;
  }
  return out;
}

/** Compiles a template text; `file` names it in errors. */
export function compileChatTemplate(text: string, file: string, extra: Record<string, unknown> = {}): ChatTemplate {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Template } = require('@huggingface/jinja') as { Template: new (t: string) => JinjaTemplate };
  let t: JinjaTemplate;
  try {
    t = new Template(text);
  } catch (e) {
    throw templateError(file, `the chat template does not parse (${(e as Error).message})`);
  }
  return {
    source: file,
    render(messages, addGenerationPrompt = true) {
      try {
        return t.render({ ...extra, messages, add_generation_prompt: addGenerationPrompt });
      } catch (e) {
        throw templateError(file, `rendering the chat template failed: ${(e as Error).message}`);
      }
    },
  };
}

/** The folder's chat template, or the hand-written ChatML of `arch` when it has none. */
export function chatTemplateFor(folder: string, arch: QwenArch): ChatTemplate {
  const found = findChatTemplate(folder);
  if (found) return compileChatTemplate(found.text, found.file, specialTokens(folder));
  return {
    source: 'built-in ChatML',
    render: (messages, addGenerationPrompt = true) => renderChat(arch, messages, addGenerationPrompt),
  };
}
