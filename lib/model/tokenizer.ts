/**
 * Word-level tokenizer of the native policy over the prompt vocabulary (lib/prompt formatPrompt:
 * questions, options, option letters, the instruction, the null option) plus special tokens and
 * the `<answer>` tags of the answer format. Words are runs of letters/digits, every other
 * non-space character is its own token; unknown words map to `<unk>` (never an error). Saved
 * with every checkpoint as JSON, so a model always decodes with the vocabulary it was trained on.
 */
import { CrpoError, invalidArg } from '../errors';
import { DEFAULT_INSTRUCTION, LETTERS, NULL_OPTION_TEXT, answerCompletion } from '../prompt';

/** Fixed ids: 0 pad, 1 unk, 2 bos, 3 eos, 4 `<answer>`, 5 `</answer>`. */
export const SPECIAL_TOKENS = ['<pad>', '<unk>', '<bos>', '<eos>', '<answer>', '</answer>'] as const;
export const PAD_ID = 0;
export const UNK_ID = 1;
export const BOS_ID = 2;
export const EOS_ID = 3;
export const ANSWER_OPEN_ID = 4;
export const ANSWER_CLOSE_ID = 5;

const PIECE = /<\/?answer>|<(?:pad|unk|bos|eos)>|[A-Za-z0-9]+|[^\sA-Za-z0-9]/g;
const NO_SPACE_BEFORE = new Set(['.', ',', '?', '!', ':', ';', ')', '</answer>']);
const NO_SPACE_AFTER = new Set(['(', '<answer>']);

export interface TokenizerJson {
  type: 'word-level';
  version: 1;
  vocab: string[];
}

/** Splits text into word-level pieces (special tags kept whole). */
export function pieces(text: string): string[] {
  return text.match(PIECE) ?? [];
}

export class Tokenizer {
  readonly vocab: readonly string[];
  private readonly index: Map<string, number>;

  private constructor(vocab: string[]) {
    this.vocab = Object.freeze(vocab.slice());
    this.index = new Map(vocab.map((w, i) => [w, i]));
  }

  /**
   * A vocabulary over `texts` (formatted prompts, options, answers): the special tokens, the
   * option letters, the instruction and null option words, then every other piece in sorted
   * order (deterministic for the same texts).
   */
  static build(texts: Iterable<string>): Tokenizer {
    const fixed: string[] = [...SPECIAL_TOKENS, ...LETTERS.split('')];
    const seen = new Set<string>(fixed);
    const extra = new Set<string>();
    const add = (t: string): void => {
      for (const p of pieces(t)) if (!seen.has(p)) extra.add(p);
    };
    add(DEFAULT_INSTRUCTION);
    add(NULL_OPTION_TEXT);
    add(answerCompletion(0));
    for (const t of texts) {
      if (typeof t !== 'string') throw invalidArg('texts', 'an iterable of strings', t, 'Tokenizer.build');
      add(t);
    }
    return new Tokenizer([...fixed, ...[...extra].sort()]);
  }

  static fromJSON(json: unknown): Tokenizer {
    const j = json as Partial<TokenizerJson> | null;
    if (!j || typeof j !== 'object' || j.type !== 'word-level' || j.version !== 1 || !Array.isArray(j.vocab)) {
      throw new CrpoError(
        'ERR_CRPO_CHECKPOINT',
        `tokenizer: expected { type: 'word-level', version: 1, vocab: string[] }`,
      );
    }
    const v = j.vocab;
    if (!v.every((w) => typeof w === 'string' && w.length > 0))
      throw new CrpoError('ERR_CRPO_CHECKPOINT', 'tokenizer: vocab entries must be non-empty strings');
    if (new Set(v).size !== v.length)
      throw new CrpoError('ERR_CRPO_CHECKPOINT', 'tokenizer: vocab has duplicate entries');
    SPECIAL_TOKENS.forEach((s, i) => {
      if (v[i] !== s)
        throw new CrpoError('ERR_CRPO_CHECKPOINT', `tokenizer: vocab[${i}] must be '${s}' but is '${String(v[i])}'`);
    });
    return new Tokenizer(v as string[]);
  }

  toJSON(): TokenizerJson {
    return { type: 'word-level', version: 1, vocab: this.vocab.slice() };
  }

  get size(): number {
    return this.vocab.length;
  }

  id(piece: string): number {
    return this.index.get(piece) ?? UNK_ID;
  }

  encode(text: string, options: { bos?: boolean; eos?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw invalidArg('text', 'a string', text, 'Tokenizer.encode');
    const ids = pieces(text).map((p) => this.id(p));
    if (options.bos) ids.unshift(BOS_ID);
    if (options.eos) ids.push(EOS_ID);
    return ids;
  }

  /** Text of `ids`; pad/bos/eos are dropped, unknown ids become `<unk>`. */
  decode(ids: ArrayLike<number>): string {
    let out = '';
    let prev = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === PAD_ID || id === BOS_ID || id === EOS_ID) continue;
      const w = Number.isInteger(id) && id >= 0 && id < this.vocab.length ? this.vocab[id] : '<unk>';
      if (out.length > 0 && !NO_SPACE_BEFORE.has(w) && !NO_SPACE_AFTER.has(prev)) out += ' ';
      out += w;
      prev = w;
    }
    return out;
  }
}
