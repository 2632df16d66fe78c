/** The shared prompt format and the strict answer parser (crpo-method.md section 3). */
import { answerCompletion, displayedOptions, formatPrompt, parseAnswer, NULL_OPTION_TEXT } from '../../lib/prompt';

describe('formatPrompt', () => {
  it('letters the options and appends the null option as the next letter', () => {
    expect(formatPrompt('Which way does the ball move?', ['left', 'right'], { nullOption: true })).toBe(
      'Which way does the ball move?\nA. left\nB. right\nC. None of the above\nAnswer with the option letter inside <answer></answer>.',
    );
    expect(displayedOptions(['a', 'b', 'c'], true)[3]).toBe(NULL_OPTION_TEXT);
  });
  it('rejects fewer than two options', () => {
    expect(() => formatPrompt('q', ['only'])).toThrow(
      'Expected an array of at least 2 strings for options but received an array of length 1',
    );
  });
});

describe('parseAnswer', () => {
  it.each([
    ['<answer>B</answer>', 1, true],
    ['The square moves right. <answer> c </answer>', 2, true],
    ['B', 1, false],
    ['(b)', 1, false],
    ['D.', 3, false],
  ])('accepts %j', (text, index, formatOk) => {
    expect(parseAnswer(text, 4)).toEqual({ index, formatOk });
  });
  it.each([
    ['The answer is B'],
    ['<answer>B</answer><answer>C</answer>'],
    ['<answer>E</answer>'],
    ['E'],
    [''],
    ['<answer>left</answer>'],
  ])('rejects %j as invalid', (text) => {
    expect(parseAnswer(text, 4)).toEqual({ index: -1, formatOk: false });
  });
  it('round-trips the training target', () => {
    expect(parseAnswer(answerCompletion(2), 3)).toEqual({ index: 2, formatOk: true });
  });
});
