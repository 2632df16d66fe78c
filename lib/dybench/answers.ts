/**
 * Answer handling shared by the builder and the importers: resolving an answer given as an
 * index, a letter or the option text; and the answer a counterfactual transform produces
 * (crpo-method.md section 2: hflip mirrors left/right, reverse inverts every motion and turns
 * reversible changes around, swap exchanges the order of two events).
 */
import { DIRECTION_WORDS, mapDirection } from '../data/categories';
import type { Category, RecordTransform } from '../data/schema';
import { LETTERS } from '../prompt';

/** Resolves an answer (0-based index, a letter 'A'.., or the option text) to an index, or a message. */
export function resolveAnswer(
  answer: unknown,
  options: readonly string[],
  indexBase = 0,
): { index: number } | { error: string } {
  if (typeof answer === 'number') {
    const i = answer - indexBase;
    if (Number.isInteger(answer) && i >= 0 && i < options.length) return { index: i };
    return {
      error: `expected an option index in [${indexBase}, ${options.length - 1 + indexBase}], received ${answer}`,
    };
  }
  if (typeof answer === 'string') {
    const t = answer.trim();
    const byText = options.findIndex((o) => o.trim().toLowerCase() === t.toLowerCase());
    if (byText >= 0) return { index: byText };
    const letter = /^\(?([A-Za-z])\)?[.)]?$/.exec(t);
    if (letter) {
      const i = LETTERS.indexOf(letter[1].toUpperCase());
      if (i < options.length) return { index: i };
      return { error: `expected a letter A-${LETTERS[options.length - 1]}, received '${t}'` };
    }
    if (/^\d+$/.test(t)) return resolveAnswer(Number(t), options, indexBase);
    return { error: `expected an option text, a letter or an index, '${t}' is none of the ${options.length} options` };
  }
  return {
    error: `expected an option index, a letter or the option text, received ${answer === null ? 'null' : typeof answer}`,
  };
}

/** Word pairs that a temporal reversal exchanges (reversible dynamics). */
const REVERSIBLE: [string, string][] = [
  ['opening', 'closing'],
  ['open', 'close'],
  ['opens', 'closes'],
  ['growing', 'shrinking'],
  ['grows', 'shrinks'],
  ['grow', 'shrink'],
  ['increasing', 'decreasing'],
  ['increases', 'decreases'],
  ['filling', 'emptying'],
  ['fills', 'empties'],
  ['inflating', 'deflating'],
  ['rising', 'falling'],
  ['rises', 'falls'],
  ['appearing', 'disappearing'],
  ['appears', 'disappears'],
  ['entering', 'leaving'],
  ['enters', 'leaves'],
  ['folding', 'unfolding'],
  ['folds', 'unfolds'],
  ['assembling', 'disassembling'],
  ['putting', 'taking'],
  ['forward', 'backward'],
  ['forwards', 'backwards'],
  ['picking up', 'putting down'],
  ['covering', 'uncovering'],
  ['plugging', 'unplugging'],
  ['tightening', 'loosening'],
  ['stacking', 'unstacking'],
  ['pushing', 'pulling'],
  ['lifting', 'lowering'],
  ['zooming in', 'zooming out'],
  ['expanding', 'contracting'],
  ['melting', 'freezing'],
  ['attaching', 'detaching'],
  ['inserting', 'removing'],
  ['turning on', 'turning off'],
];

function swapWords(text: string, pairs: [string, string][]): string {
  const map = new Map<string, string>();
  for (const [a, b] of pairs) {
    map.set(a, b);
    map.set(b, a);
  }
  const keys = [...map.keys()].sort((a, b) => b.length - a.length).map((k) => k.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`\\b(${keys.join('|')})\\b`, 'gi');
  return text.replace(re, (m) => {
    const r = map.get(m.toLowerCase())!;
    return m[0] === m[0].toUpperCase() ? r[0].toUpperCase() + r.slice(1) : r;
  });
}

const norm = (s: string): string =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9\s-]/g, '')
    .replace(/\s+/g, ' ')
    .trim();

/**
 * The answer index after `transform`, derived from the option texts when the rule is clear:
 * moving direction (direction words), reversible dynamics (word pairs such as opening/closing),
 * event sequence with two options (the other one), static (unchanged). Undefined when it cannot
 * be derived; the user then gives it in the annotation.
 */
export function deriveAnswer(
  category: Category,
  options: readonly string[],
  answer: number,
  transform: RecordTransform,
): number | undefined {
  if (transform === 'none' || category === 'static') return answer;
  if (category === 'event_sequence') return transform === 'swap' && options.length === 2 ? 1 - answer : undefined;
  const text = options[answer];
  let mapped: string;
  if (category === 'moving_direction') {
    const words = text.split(/(\s+)/);
    if (!words.some((w) => DIRECTION_WORDS.includes(w.toLowerCase().replace(/[^a-z-]/g, '')))) return undefined;
    mapped = words.map((w) => (/^\s+$/.test(w) ? w : mapDirection(w.replace(/[^A-Za-z-]/g, ''), transform))).join('');
    if (norm(mapped) === norm(text)) return answer; // no direction word changed: same answer
  } else if (category === 'reversible_dynamics') {
    if (transform !== 'reverse') return undefined;
    mapped = swapWords(text, REVERSIBLE);
    if (norm(mapped) === norm(text)) return undefined;
  } else {
    return undefined;
  }
  const i = options.findIndex((o) => norm(o) === norm(mapped));
  return i >= 0 ? i : undefined;
}
