/**
 * Importers: released-DyBench-like configs with unknown field names (detected names, --field
 * mappings, pair id / partner video / consecutive pairing, 1-based and letter answers, inline
 * options) and TimeBlind-style instances; bad entries are reported as file:entry:field, and
 * what they produce loads strictly.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { toJsonl } from '../../lib/data/jsonl';
import { loadRecords, parseRecords } from '../../lib/data/loader';
import { deriveAnswer, resolveAnswer } from '../../lib/dybench/answers';
import { importDyBench, importTimeBlind, parseFieldFlags } from '../../lib/dybench/importers';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-import-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const put = (name: string, data: unknown): string => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, typeof data === 'string' ? data : JSON.stringify(data, null, 2));
  return f;
};

describe('importDyBench', () => {
  test('detects common field names; category from the file name; pairs by pair id', () => {
    const f = put('reversible_dynamics.json', [
      {
        id: 'r1',
        pair_id: 'p1',
        video: 'v/r1.mp4',
        question: 'Is the door opening or closing?',
        candidates: ['opening', 'closing', 'neither'],
        ans: 'A',
      },
      {
        id: 'r2',
        pair_id: 'p1',
        video: 'v/r2.mp4',
        question: 'Is the door opening or closing?',
        candidates: ['opening', 'closing', 'neither'],
        ans: 'B',
      },
    ]);
    const r = importDyBench({ input: f });
    expect(r.mapping).toMatchObject({
      id: 'id',
      pair_id: 'pair_id',
      video: 'video',
      options: 'candidates',
      answer: 'ans',
      question: 'question',
    });
    expect(r.records.map((x) => [x.id, x.pair_id, x.transform, x.answer, x.category])).toEqual([
      ['r1', 'p1', 'none', 0, 'reversible_dynamics'],
      ['r2', 'p1', 'reverse', 1, 'reversible_dynamics'],
    ]);
    expect(r.records[0].video).toBe(path.join(dir, 'v/r1.mp4'));
    expect(parseRecords(toJsonl(r.records), 'out.jsonl').records).toHaveLength(2);
  });

  test('explicit --field mapping with dotted paths, 1-based answers, an object holding the list', () => {
    const f = put('es.json', {
      version: 1,
      data: [
        {
          meta: { vid: 'a.mp4', grp: 7 },
          qa: { text: 'Which happens first?', opts: { A: 'cut', B: 'stir' }, gt: 1 },
          kind: 'swap',
        },
        {
          meta: { vid: 'b.mp4', grp: 7 },
          qa: { text: 'Which happens first?', opts: { A: 'cut', B: 'stir' }, gt: 2 },
          kind: 'swap',
        },
      ],
    });
    const fields = parseFieldFlags(
      ['video=meta.vid', 'pair_id=meta.grp', 'question=qa.text', 'options=qa.opts', 'answer=qa.gt'],
      ['video', 'pair_id', 'question', 'options', 'answer'],
    );
    const r = importDyBench({ input: f, fields, answerBase: 1, category: 'event_sequence' });
    expect(r.records.map((x) => [x.pair_id, x.options.join('|'), x.answer, x.transform])).toEqual([
      ['7', 'cut|stir', 0, 'none'],
      ['7', 'cut|stir', 1, 'swap'],
    ]);
    expect(() => parseFieldFlags(['vid=x'], ['video'])).toThrow(
      "Expected a field name among video for --field but received 'vid' of type string",
    );
    expect(() => parseFieldFlags(['video'], ['video'])).toThrow(
      "Expected 'name=path' (e.g. question=query) for --field but received 'video' of type string",
    );
  });

  test('both videos in one entry (partner video), answer derived from direction words; JSONL input; inline options', () => {
    const f = put(
      'moving_direction.jsonl',
      toJsonl([
        {
          video: 'm1.mp4',
          video_reverse: 'm1_rev.mp4',
          question: 'Where does the car go?\nA. to the left\nB. to the right\nC. up\nD. down',
          answer: 'B',
        },
        {
          video: 'm2.mp4',
          video_reverse: 'm2_rev.mp4',
          question: 'Where does the ball go?',
          options: ['left', 'right', 'up', 'down'],
          answer: 2,
          answer_reverse: 3,
        },
      ]),
    );
    const r = importDyBench({ input: f, partnerTransform: 'reverse' });
    expect(r.mapping.partner_video).toBe('video_reverse');
    expect(r.records.map((x) => `${x.id}:${x.transform}:${x.options[x.answer]}`)).toEqual([
      'moving_direction-00000:none:to the right',
      'moving_direction-00000-reverse:reverse:to the left',
      'moving_direction-00001:none:up',
      'moving_direction-00001-reverse:reverse:down',
    ]);
    expect(r.records[0].question).toBe('Where does the car go?');
  });

  test('consecutive pairing, and every bad entry reported as file:entry:field', () => {
    const f = put('moving_direction_bad.json', [
      { video: 'a.mp4', question: 'Which way?', options: ['left', 'right', 'up', 'down'], answer: 'left' },
      { video: 'b.mp4', question: 'Which way?', options: ['left', 'right', 'up', 'down'], answer: 'right' },
      { video: 'c.mp4', question: 'Which way?', options: ['left', 'right', 'up'], answer: 'left' },
      { video: 'd.mp4', question: 'Which way?', options: ['left', 'right', 'up', 'down'], answer: 'sideways' },
      { video: 'e.mp4', options: ['left', 'right', 'up', 'down'], answer: 0 },
      { video: 'f.mp4', question: 'Which way?', options: ['left', 'right', 'up', 'down'], answer: 7 },
    ]);
    let msg = '';
    try {
      importDyBench({ input: f, pairBy: 'consecutive' });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain(`${f}:3:options: expected 4 options for category moving_direction, received 3`);
    expect(msg).toContain(
      `${f}:4:answer: expected an option text, a letter or an index, 'sideways' is none of the 4 options`,
    );
    expect(msg).toContain(`${f}:5:question: expected the question text`);
    expect(msg).toContain(`${f}:6:answer: expected an option index in [0, 3], received 7`);
    const r = importDyBench({ input: f, pairBy: 'consecutive', mode: 'lenient' });
    expect(r.records.map((x) => x.id)).toEqual(['moving_direction-pair-00000-0', 'moving_direction-pair-00000-1']);
    expect(r.records[1].transform).toBe('hflip');
    expect(r.skipped).toBe(4);
  });

  test('a pair with one member, duplicate ids, and no way to tell the pairs are errors', () => {
    const f = put('reversible_dynamics_pairs.json', [
      { id: 'x', pair: 'p', video: 'a.mp4', question: 'q', options: ['opening', 'closing', 'neither'], answer: 0 },
      { id: 'x', pair: 'q', video: 'b.mp4', question: 'q', options: ['opening', 'closing', 'neither'], answer: 1 },
      { id: 'y', pair: 'q', video: 'c.mp4', question: 'q', options: ['opening', 'closing', 'neither'], answer: 1 },
    ]);
    expect(() => importDyBench({ input: f })).toThrow(
      `${f}:2:id: expected a unique id, 'x' is already used by entry 1`,
    );
    expect(() => importDyBench({ input: f })).toThrow(`${f}:1:pair_id: expected 2 records in pair 'p', found 1`);
    const g = put('reversible_dynamics_nopairs.json', [
      { video: 'a.mp4', question: 'q', options: ['a', 'b', 'c'], answer: 0 },
    ]);
    expect(() => importDyBench({ input: g })).toThrow(
      /cannot tell the pairs: no pair id or partner video field found .* or pass --pair-by consecutive/,
    );
    expect(() => importDyBench({ input: path.join(dir, 'missing.json') })).toThrow(
      `input file not found: ${path.join(dir, 'missing.json')}`,
    );
  });
});

describe('importTimeBlind', () => {
  test('nested instances: 2 videos x 2 questions -> four records with meta.instance', () => {
    const f = put('tb.json', [
      {
        id: 'i1',
        videos: ['x.mp4', 'y.mp4'],
        questions: ['Does it open?', { question: 'Which first?', options: ['A cut', 'A stir'] }],
        answers: [
          ['yes', 0],
          ['no', 'B'],
        ],
      },
    ]);
    const r = importTimeBlind({ input: f });
    expect(
      r.records.map((x) => [x.id, x.pair_id, x.options[x.answer], (x.meta as { instance: unknown }).instance]),
    ).toEqual([
      ['i1-v0-q0', 'i1', 'yes', { video: 0, question: 0 }],
      ['i1-v0-q1', 'i1', 'A cut', { video: 0, question: 1 }],
      ['i1-v1-q0', 'i1', 'no', { video: 1, question: 0 }],
      ['i1-v1-q1', 'i1', 'A stir', { video: 1, question: 1 }],
    ]);
    expect(parseRecords(toJsonl(r.records), 'tb.jsonl').records).toHaveLength(4);
  });

  test('flat fields mapped with comma lists; a wrong answer count is reported', () => {
    const f = put(
      'tb2.jsonl',
      toJsonl([
        {
          uid: 'a',
          v1: '1.mp4',
          v2: '2.mp4',
          q1: 'Is it moving left?',
          q2: 'Is it moving right?',
          a: 'yes',
          b: 'no',
          c: 'no',
          d: 'yes',
        },
        { uid: 'b', v1: '1.mp4', v2: '2.mp4', q1: 'q', q2: 'q2', a: 'yes', b: 'no', c: 'no' },
      ]),
    );
    const fields = parseFieldFlags(
      ['id=uid', 'videos=v1,v2', 'questions=q1,q2', 'answers=a,b,c,d'],
      ['id', 'videos', 'questions', 'answers'],
    );
    expect(() => importTimeBlind({ input: f, fields })).toThrow(
      `${f}:2:answers.3: expected an option index, a letter or the option text, received undefined`,
    );
    const r = importTimeBlind({ input: f, fields, mode: 'lenient' });
    expect(r.records).toHaveLength(4);
    expect(r.skipped).toBe(1);
  });
});

describe('answers', () => {
  test('resolveAnswer and deriveAnswer', () => {
    expect(resolveAnswer('(c)', ['a', 'b', 'c'])).toEqual({ index: 2 });
    expect(resolveAnswer('B', ['a', 'b'])).toEqual({ index: 1 }); // option text wins over letter when equal
    expect(resolveAnswer(1, ['a', 'b'], 1)).toEqual({ index: 0 });
    expect(resolveAnswer('D', ['a', 'b'])).toEqual({ error: "expected a letter A-B, received 'D'" });
    expect(deriveAnswer('moving_direction', ['Moving left.', 'Moving right.', 'up', 'down'], 0, 'hflip')).toBe(1);
    expect(deriveAnswer('moving_direction', ['left', 'right', 'up', 'down'], 2, 'hflip')).toBe(2);
    expect(deriveAnswer('moving_direction', ['left', 'right', 'up', 'down'], 2, 'hflip+reverse')).toBe(3);
    expect(deriveAnswer('moving_direction', ['north', 'south'], 0, 'reverse')).toBeUndefined();
    expect(
      deriveAnswer('reversible_dynamics', ['The door is Opening', 'The door is closing', 'Neither'], 0, 'reverse'),
    ).toBe(1);
    expect(deriveAnswer('event_sequence', ['x', 'y'], 1, 'swap')).toBe(0);
    expect(deriveAnswer('static', ['red', 'blue'], 1, 'hflip')).toBe(1);
  });
});

describe('crpo dybench import / validate', () => {
  test('the CLI prints the mapping, writes JSONL that validates', async () => {
    const f = put('event_sequence.json', [
      { qid: 'e1', group: 'g', clip: 'e1.mp4', query: 'Which first?', choices: ['pour', 'stir'], label: 0 },
      {
        qid: 'e2',
        group: 'g',
        clip: 'e2.mp4',
        query: 'Which first?',
        choices: ['pour', 'stir'],
        label: 1,
        augmentation: 'swap',
      },
    ]);
    const out = path.join(dir, 'es.jsonl');
    const lines: string[] = [];
    const w = jest
      .spyOn(process.stdout, 'write')
      .mockImplementation((s: string | Uint8Array) => (lines.push(String(s)), true));
    process.exitCode = undefined;
    await main(['dybench', 'import', 'dybench', f, '--out', out, '--field', 'question=query']);
    await main(['dybench', 'validate', out]);
    w.mockRestore();
    expect(process.exitCode).toBeUndefined();
    expect(lines[0]).toContain(
      'event_sequence.json: 2 records; field mapping: id=qid pair_id=group video=clip partner_video=- question=query options=choices answer=label',
    );
    expect(lines.join('')).toContain(`${out}: 2 records, 1 pairs (event_sequence 2)`);
    const recs = (await loadRecords(out)).records;
    expect(recs.map((r) => r.transform)).toEqual(['none', 'swap']);
  });

  test('validate exits 1 on a bad file, printing one line per problem', async () => {
    const bad = put('bad.jsonl', '{"id": 1}\n');
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    process.exitCode = undefined;
    await main(['dybench', 'validate', bad]);
    expect(process.exitCode).toBe(1);
    expect(String(err.mock.calls[0][0])).toContain(`${bad}:1:id: Invalid input: expected string, received number`);
    err.mockRestore();
    process.exitCode = undefined;
  });
});
