/**
 * The prompt and answer format shared by evaluation, the policy and the trainer
 * (crpo-method.md section 3): lettered options, an optional null option "None of the above" as
 * the next letter, and strict answer parsing from `<answer>X</answer>` or a bare letter.
 * Anything else is invalid (-1), never a substring guess.
 */
import { invalidArg, outOfRange } from '../errors';

export const NULL_OPTION_TEXT = 'None of the above';
export const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

export interface PromptOptions {
  /** Append "None of the above" as the next letter. */
  nullOption?: boolean;
  /** Instruction line after the options. */
  instruction?: string;
}

export const DEFAULT_INSTRUCTION = 'Answer with the option letter inside <answer></answer>.';

/** The options actually shown: the given ones plus the null option when enabled. */
export function displayedOptions(options: readonly string[], nullOption = false): string[] {
  if (!Array.isArray(options) || options.length < 2)
    throw invalidArg('options', 'an array of at least 2 strings', options, 'displayedOptions');
  if (options.length + (nullOption ? 1 : 0) > LETTERS.length)
    throw outOfRange(
      'options',
      `at most ${LETTERS.length - (nullOption ? 1 : 0)} options`,
      options.length,
      'displayedOptions',
    );
  return nullOption ? [...options, NULL_OPTION_TEXT] : [...options];
}

/** "Question\nA. x\nB. y\n...\nInstruction" */
export function formatPrompt(question: string, options: readonly string[], o: PromptOptions = {}): string {
  const shown = displayedOptions(options, o.nullOption ?? false);
  const lines = [
    question.trim(),
    ...shown.map((opt, i) => `${LETTERS[i]}. ${opt}`),
    o.instruction ?? DEFAULT_INSTRUCTION,
  ];
  return lines.join('\n');
}

export interface ParsedAnswer {
  /** Option index, or -1 when invalid (unparseable or outside the shown options). */
  index: number;
  /** True when the response used the `<answer>X</answer>` format exactly once. */
  formatOk: boolean;
}

const TAGGED = /<answer>\s*([A-Za-z])\s*<\/answer>/g;
const BARE = /^\s*\(?([A-Za-z])\)?\s*[.)]?\s*$/;

/**
 * Parses a model response against `numOptions` shown options. Accepts exactly one
 * `<answer>X</answer>` (reasoning text around it is fine) or a response that is a bare letter
 * ("B", "(B)", "B."). Anything else, or a letter beyond the shown options, is invalid.
 */
export function parseAnswer(response: string, numOptions: number): ParsedAnswer {
  if (typeof response !== 'string') return { index: -1, formatOk: false };
  const tags = [...response.matchAll(TAGGED)];
  let letter: string | undefined;
  let formatOk = false;
  if (tags.length === 1) {
    letter = tags[0][1];
    formatOk = true;
  } else if (tags.length === 0) {
    const m = BARE.exec(response);
    if (m) letter = m[1];
  }
  if (!letter) return { index: -1, formatOk: false };
  const index = LETTERS.indexOf(letter.toUpperCase());
  return index >= 0 && index < numOptions ? { index, formatOk } : { index: -1, formatOk: false };
}

/** The letter of option `index` ("A" for 0). */
export function letterOf(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= LETTERS.length)
    throw outOfRange('index', `an integer in [0, ${LETTERS.length - 1}]`, index, 'letterOf');
  return LETTERS[index];
}

/** The canonical target completion for supervised training: "<answer>B</answer>". */
export function answerCompletion(index: number): string {
  return `<answer>${letterOf(index)}</answer>`;
}

/**
 * The option's text, then its letter: "blue <answer>B</answer>" (`shown`: the options as
 * displayed, lib/prompt displayedOptions). A short rationale before the answer, as reasoning
 * models write one: to name the letter the model then finds the words it has just written in
 * the option list, instead of matching what it saw against every option at once (docs/model.md).
 */
export function optionAnswerCompletion(shown: readonly string[], index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= shown.length)
    throw outOfRange('index', `an integer in [0, ${shown.length - 1}]`, index, 'optionAnswerCompletion');
  return `${shown[index]} ${answerCompletion(index)}`;
}
