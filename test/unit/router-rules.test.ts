/**
 * Task Router rules backend and policy (crpo-method.md section 2): accuracy on the labelled set
 * (dev and held-out parts), the policy table against a small motion model, the seeded static
 * choice, and the synchronous routeRecord API.
 */
import * as path from 'path';
import {
  applyPolicy,
  classifyByRules,
  RULES_VERSION,
  loadLabelled,
  POLICY_TABLE,
  routeRecord,
  routerBackends,
  scoreRoutes,
  staticTransform,
  Route,
  ROUTE_TRANSFORMS,
  type RouteTransform,
} from '../../lib/router';

const DATA = path.join(__dirname, '..', '..', 'data', 'router');

function rulesRoutes(file: string) {
  const labels = loadLabelled(path.join(DATA, file));
  const routes = labels.map((l) => routeRecord(l, { seed: 0 }));
  return { labels, routes, acc: scoreRoutes(labels, routes) };
}

describe('labelled set', () => {
  test('has at least 200 questions over all four types and the four benchmark styles, with unique ids', () => {
    const all = [
      ...loadLabelled(path.join(DATA, 'labelled-heldout.jsonl')),
      ...loadLabelled(path.join(DATA, 'labelled-dev.jsonl')),
    ];
    expect(all.length).toBeGreaterThanOrEqual(200);
    expect(new Set(all.map((l) => l.id)).size).toBe(all.length);
    expect(new Set(all.map((l) => l.type))).toEqual(new Set(['spatial', 'temporal', 'spatiotemporal', 'static']));
    for (const s of ['ssv2', 'nextqa', 'tempcompass', 'mvbench']) expect(all.some((l) => l.style === s)).toBe(true);
  });
});

describe('rules backend accuracy', () => {
  test('held-out part: >= 90% type accuracy and >= 98% transform validity', () => {
    const { acc } = rulesRoutes('labelled-heldout.jsonl');
    expect(acc.n).toBeGreaterThanOrEqual(100);
    expect(acc.typeAccuracy).toBeGreaterThanOrEqual(0.9);
    expect(acc.transformValidity.share).toBeGreaterThanOrEqual(0.98);
    expect(acc.staticInvariance.share).toBe(1);
  });

  test('dev part: >= 90% type accuracy and >= 98% transform validity', () => {
    const { acc } = rulesRoutes('labelled-dev.jsonl');
    expect(acc.typeAccuracy).toBeGreaterThanOrEqual(0.9);
    expect(acc.transformValidity.share).toBeGreaterThanOrEqual(0.98);
  });

  test('every route is a valid route object and deterministic', () => {
    const { labels, routes } = rulesRoutes('labelled-dev.jsonl');
    for (const r of routes) expect(Route.safeParse(r).success).toBe(true);
    expect(labels.map((l) => routeRecord(l, { seed: 0 }))).toEqual(routes);
  });

  test('cues in a description do not make a static question dynamic; confidence is lower on weak evidence', () => {
    expect(classifyByRules('What colour is the van that drives away?', ['white', 'red']).type).toBe('static');
    expect(classifyByRules('How many times does the ball bounce up?', ['1', '2', '3']).type).toBe('static');
    const none = classifyByRules('Describe the clip.', ['a', 'b']);
    expect(none.type).toBe('static');
    expect(none.confidence).toBeLessThan(0.7);
    expect(
      classifyByRules('Is the man opening or closing the door?', ['opening', 'closing']).confidence,
    ).toBeGreaterThanOrEqual(0.7);
  });
});

/**
 * A motion model independent of the table: the answer of each kind of question is the sign of one
 * feature; hflip negates x-velocity, rotation sense, turn sense and x-position; reverse negates
 * every velocity, rotation sense and event order, and makes a turn ambiguous.
 */
const FEATURES = { vx: 0, vy: 0, vz: 0, w: 0, turn: 0, sx: 0, order: 0 };
type Feature = keyof typeof FEATURES;
const FLIPPED: Record<RouteTransform, Feature[]> = {
  hflip: ['vx', 'w', 'turn', 'sx'],
  reverse: ['vx', 'vy', 'vz', 'w', 'order'],
  'hflip+reverse': [],
};
FLIPPED['hflip+reverse'] = (Object.keys(FEATURES) as Feature[]).filter(
  (f) => FLIPPED.hflip.includes(f) !== FLIPPED.reverse.includes(f),
);
// Played backwards, a turning vehicle backs along its arc: neither a left nor a clean right turn.
const AMBIGUOUS: Record<RouteTransform, Feature[]> = { hflip: [], reverse: ['turn'], 'hflip+reverse': ['turn'] };
const ANSWER_FEATURES: Record<string, Feature[]> = {
  spatial: ['sx'],
  temporal: ['order'],
  horizontal: ['vx'],
  vertical: ['vy'],
  depth: ['vz'],
  rotation: ['w'],
  turn: ['turn'],
  mixed: ['vx', 'vy', 'vz'],
  static: [],
};

describe('policy table', () => {
  test.each(POLICY_TABLE.map((r) => [r.axis ?? r.type, r] as const))(
    '%s: allowed transforms are exactly those the motion model says change (or keep) the answer',
    (key, row) => {
      const feats = ANSWER_FEATURES[key];
      for (const t of ROUTE_TRANSFORMS) {
        const changesAll = feats.length > 0 && feats.every((f) => FLIPPED[t].includes(f) && !AMBIGUOUS[t].includes(f));
        if (row.type === 'static') expect(row.allowed.includes(t)).toBe(t !== 'hflip+reverse');
        else expect({ t, allowed: row.allowed.includes(t) }).toEqual({ t, allowed: changesAll });
      }
      expect(row.allowed).toContain(row.preferred);
      expect(row.relation).toBe(row.type === 'static' ? 'same' : 'change');
    },
  );

  test('a dynamic proposal outside the table is replaced and says why', () => {
    const d = applyPolicy(
      { type: 'spatiotemporal', axis: 'vertical', proposedTransform: 'hflip', confidence: 1, rationale: '' },
      'Is it going up?',
      ['up', 'down'],
      0,
    );
    expect(d.transform).toBe('reverse');
    expect(d.corrected).toMatch(/proposed hflip replaced by reverse/);
    expect(
      applyPolicy(
        { type: 'spatial', proposedTransform: 'hflip+reverse', confidence: 1, rationale: '' },
        'q',
        ['a', 'b'],
        0,
      ).transform,
    ).toBe('hflip+reverse');
  });

  test('static questions: seeded, balanced choice of hflip or reverse; reverse for text', () => {
    const qs = Array.from({ length: 400 }, (_, i) => `What colour is object ${i}?`);
    const picks = qs.map((q) => staticTransform(q, ['red', 'blue'], 7, false));
    expect(qs.map((q) => staticTransform(q, ['red', 'blue'], 7, false))).toEqual(picks);
    const nFlip = picks.filter((p) => p === 'hflip').length;
    expect(nFlip).toBeGreaterThan(150);
    expect(nFlip).toBeLessThan(250);
    const other = qs.map((q) => staticTransform(q, ['red', 'blue'], 8, false));
    expect(other).not.toEqual(picks);
    expect(
      routeRecord({ question: 'What is written on the banner?', options: ['SALE', 'OPEN'] }, { seed: 1 }).transform,
    ).toBe('reverse');
    expect(
      routeRecord({ question: 'What is written on the banner?', options: ['SALE', 'OPEN'] }, { seed: 2 }).transform,
    ).toBe('reverse');
  });
});

describe('routeRecord', () => {
  test('returns the route synchronously for the rules backend', () => {
    const r = routeRecord(
      { question: 'Is the drawer being opened or closed?', options: ['opened', 'closed'] },
      { backend: 'rules', seed: 3 },
    );
    expect(r).toMatchObject({
      type: 'temporal',
      transform: 'reverse',
      relation: 'change',
      backend: 'rules',
      model: RULES_VERSION,
      promptVersion: RULES_VERSION,
    });
  });

  test('rejects bad input with the standard message, and async-only backends with a code', () => {
    expect(() => routeRecord({ question: '', options: ['a', 'b'] })).toThrow(
      "Expected a non-empty string for record.question but received '' of type string",
    );
    expect(() => routeRecord({ question: 'q', options: ['a'] })).toThrow(
      'Expected an array of at least 2 strings for record.options but received an array of length 1',
    );
    expect(() => routeRecord({ question: 'q', options: ['a', 'b'] }, { backend: 'llm' as 'rules' })).toThrow(
      expect.objectContaining({ code: 'ERR_CRPO_SYNC_BACKEND' }),
    );
  });

  test('the backend registry lists the known names on an unknown one', () => {
    expect(routerBackends.names()).toEqual(['hybrid', 'llm', 'rules']);
    expect(() => routerBackends.get('gpt')).toThrow("Unknown router backend 'gpt'; known: hybrid, llm, rules");
  });
});
