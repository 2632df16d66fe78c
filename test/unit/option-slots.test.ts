/**
 * Option slots of a prompt's tokens (lib/model/policy.ts optionSlots): aligned one to one with
 * Tokenizer.encode(text, { bos: true }), the slot of an option line on all of its tokens.
 */
import { optionSlots } from '../../lib/model/policy';
import { Tokenizer } from '../../lib/model/tokenizer';
import { formatPrompt } from '../../lib/prompt';

describe('optionSlots', () => {
  const text = formatPrompt('What colour is the object?', ['red', 'dark blue', 'green'], { nullOption: true });
  const tok = Tokenizer.build([text]);

  test('one slot per token, the option letter on every token of its line, 0 elsewhere', () => {
    const ids = tok.encode(text, { bos: true });
    const slots = optionSlots(text, 8);
    expect(slots).toHaveLength(ids.length);
    const words = ids.map((id) => tok.vocab[id]);
    const byWord = words.map((w, i) => `${w}:${slots[i]}`).join(' ');
    expect(byWord).toContain('A:1 .:1 red:1 B:2 .:2 dark:2 blue:2 C:3 .:3 green:3 D:4 .:4 None:4 of:4 the:4 above:4');
    expect(slots[0]).toBe(0); // <bos>
    expect(words.slice(1, 7).every((_, i) => slots[1 + i] === 0)).toBe(true); // the question
    expect(slots[slots.length - 1]).toBe(0); // the instruction line
  });

  test('slots past the table size are 0; a prompt without option lines is all 0', () => {
    expect(Math.max(...optionSlots(text, 2))).toBe(2);
    expect(optionSlots(text, 2).filter((s) => s === 0).length).toBeGreaterThan(
      optionSlots(text, 8).filter((s) => s === 0).length,
    );
    expect(new Set(optionSlots('Describe the video.', 8))).toEqual(new Set([0]));
  });
});
