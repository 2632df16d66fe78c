/**
 * External check of the rules router on real benchmark questions: TempCompass's questions
 * (github.com/llyx97/TempCompass, questions/{multi-choice,yes_no,caption_matching}.json, CC BY-NC
 * 4.0, not shipped here: pass the path of one of them). Expected types come from TempCompass's own dimension labels, not
 * from this project: action -> static, order -> temporal, attribute_change -> temporal,
 * direction -> spatiotemporal; speed is reported as a distribution (it mixes video playback speed,
 * comparisons and changes). Transform validity is measured where TempCompass itself says the
 * answer changes: a question asked on a clip and on its `_reverse` clip with different answers.
 * `--part dev|heldout` keeps the clips whose id hashes (FNV-1a) even / odd: rules are tuned on
 * the dev half only and the held-out half is reported.
 * Usage: node -r ./scripts/ts-register.js bench/router/tempcompass-check.ts <multi-choice.json> [--part dev|heldout] [--errors]
 */
import * as fs from 'fs';
import { routeRecord, type RouteType } from '../../lib/router';
import { fnv1a } from '../../lib/router/policy';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: tempcompass-check.ts <TempCompass questions/multi-choice.json> [--errors]\n');
  process.exit(1);
}
const showErrors = process.argv.includes('--errors');
const partArg = process.argv.indexOf('--part');
const part = partArg > 0 ? process.argv[partArg + 1] : 'all';
if (!['dev', 'heldout', 'all'].includes(part)) throw new Error(`--part must be dev, heldout or all, got ${part}`);
const inPart = (vid: string): boolean =>
  part === 'all' || (fnv1a(vid.replace(/_reverse$/, '')) % 2 === 0) === (part === 'dev');
type Item = { question: string; answer: string };
const data = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, Record<string, Item[]>>;
const EXPECTED: Record<string, RouteType> = {
  action: 'static',
  order: 'temporal',
  attribute_change: 'temporal',
  direction: 'spatiotemporal',
};

// Option lines of the three TempCompass formats: "A. x" (multi-choice), "Option 1: x" /
// "Sentence A: x" / "Caption A: x" (caption matching); yes/no questions get options yes, no.
const OPTION_LINE = /^(?:[A-Z]\.|Option \d+:|Sentence [A-Z]:|Caption [A-Z]:)\s*/;

function split(q: string, answer = ''): { question: string; options: string[] } {
  const lines = q.split('\n').filter((l) => !/^Please answer/i.test(l));
  const options = lines.filter((l) => OPTION_LINE.test(l)).map((l) => l.replace(OPTION_LINE, ''));
  const question = lines
    .filter((l) => !OPTION_LINE.test(l))
    .join(' ')
    .trim();
  if (options.length === 0 && /^(yes|no)\b/i.test(answer)) return { question, options: ['yes', 'no'] };
  return { question, options };
}

/** The answer text without its option prefix. */
function answerText(a: string): string {
  return a.replace(OPTION_LINE, '').trim().toLowerCase();
}

const perDim: Record<string, { n: number; ok: number; got: Record<string, number> }> = {};
const errors: string[] = [];
const validity = { n: 0, reverse: 0, hflipOnly: 0, hflipReverse: 0, static: 0 };
// Agreement by rules confidence (the hybrid backend asks the LLM below 0.7).
const confident = { n: 0, ok: 0 };
const unsure = { n: 0, ok: 0 };
for (const [vid, dims] of Object.entries(data)) {
  if (vid.endsWith('_reverse') || !inPart(vid)) continue;
  for (const [dim, items] of Object.entries(dims)) {
    const reversed = data[`${vid}_reverse`]?.[dim] ?? [];
    for (const it of items) {
      const { question, options } = split(it.question, it.answer);
      if (options.length < 2) continue;
      const r = routeRecord({ question, options });
      const s = (perDim[dim] ??= { n: 0, ok: 0, got: {} });
      s.n++;
      s.got[r.type] = (s.got[r.type] ?? 0) + 1;
      if (EXPECTED[dim]) {
        const bin = (r.confidence ?? 0) >= 0.7 ? confident : unsure;
        bin.n++;
        if (r.type === EXPECTED[dim]) bin.ok++;
      }
      if (EXPECTED[dim] && r.type === EXPECTED[dim]) s.ok++;
      else if (EXPECTED[dim] && showErrors)
        errors.push(
          `${dim}: expected ${EXPECTED[dim]}, got ${r.type} (${r.rationale}): ${question} | ${options.join(' | ')}`,
        );
      // TempCompass's reversed clip: same question (options may be reordered), different answer text.
      const twin = reversed.find((x) => split(x.question, x.answer).question === question);
      if (twin && answerText(twin.answer) !== answerText(it.answer)) {
        validity.n++;
        if (r.type === 'static') validity.static++;
        else if (r.transform === 'reverse') validity.reverse++;
        else if (r.transform === 'hflip+reverse') validity.hflipReverse++;
        else validity.hflipOnly++;
      }
    }
  }
}
const pct = (a: number, b: number): string => (b ? `${((100 * a) / b).toFixed(1)}%` : 'n/a');
let tn = 0;
let tok = 0;
for (const [dim, s] of Object.entries(perDim)) {
  const dist = Object.entries(s.got)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  if (EXPECTED[dim]) {
    tn += s.n;
    tok += s.ok;
    process.stdout.write(
      `${dim.padEnd(17)} expected ${EXPECTED[dim].padEnd(15)} ${pct(s.ok, s.n).padStart(6)} (${s.ok}/${s.n})   routed: ${dist}\n`,
    );
  } else process.stdout.write(`${dim.padEnd(17)} (no single type)                   routed: ${dist}\n`);
}
process.stdout.write(`part: ${part}\n`);
process.stdout.write(`type agreement over action/order/attribute_change/direction: ${pct(tok, tn)} (${tok}/${tn})\n`);
process.stdout.write(
  `questions whose answer TempCompass changes by reversing the clip: ${validity.n}; routed to reverse ${pct(validity.reverse + validity.hflipReverse, validity.n)}, to hflip only ${pct(validity.hflipOnly, validity.n)} (not verifiable here), to static ${pct(validity.static, validity.n)} (wrong)\n`,
);
process.stdout.write(
  `confidence >= 0.7: ${confident.n} questions, agreement ${pct(confident.ok, confident.n)}; below: ${unsure.n}, agreement ${pct(unsure.ok, unsure.n)}\n`,
);
if (showErrors) process.stdout.write(errors.join('\n') + '\n');
