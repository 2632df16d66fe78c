/**
 * The rules backend of the Task Router (crpo-method.md section 2): a deterministic, offline
 * classifier over lexical cues in the question and its options. Each cue family adds evidence
 * to one type; the type with the most evidence wins and the margin over the runner-up gives the
 * confidence (the hybrid backend asks the LLM below a threshold). Cue families:
 * - static heads: counting, attributes (colour, shape, material, kind), reading text, existence,
 *   absolute speed, concurrent activity ("doing while"), explanations ("why");
 * - temporal: order words (before/after/first/then/last/next), reversible action pairs
 *   (opening/closing, putting in/taking out, folding/unfolding), playback direction, speed change,
 *   state change ("from off to on");
 * - spatiotemporal: a motion word together with a direction (left/right, up/down, toward/away,
 *   clockwise), camera pan/tilt/zoom, turns;
 * - spatial: left/right with no motion (layout, which hand, facing).
 * Versioned by RULES_VERSION: change it whenever a rule changes (it is part of the cache key).
 */
import type { Classification, MotionAxis, RouteType } from './types';

export const RULES_VERSION = 'rules-3';

/** Lower-case, punctuation to spaces, padded with spaces so every cue can be matched as words. */
export function normalise(text: string): string {
  // "point of view" is not pointing; "which of the following" is not an order.
  return (
    ' ' +
    text
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, ' ')
      .trim() +
    ' '
  )
    .replace(/ point of view /g, ' pov ')
    .replace(/ the following /g, ' these ');
}

const W = (words: string): RegExp => new RegExp(`\\b(?:${words})\\b`);

// --- direction and motion vocabulary ---
const LR = W('left|right|leftward|rightward|leftwards|rightwards|leftmost|rightmost');
const VERTICAL = W(
  'up|down|upward|upwards|downward|downwards|rise|rises|rising|rose|ascend\\w*|descend\\w*|fall|falls|falling|fell|sink|sinks|sinking|top to bottom|bottom to top|tilt\\w*|vertical\\w*|top|bottom',
);
const DEPTH = W(
  'toward|towards|away|approach\\w*|closer|farther|further|zoom\\w*|forward|forwards|backward|backwards|nearer|recede\\w*',
);
const ROTATION_SENSE = W('clockwise|counterclockwise|anticlockwise|counter clockwise|anti clockwise');
const ROTATION = W('rotat\\w*|spin\\w*|revolv\\w*|twist\\w*');
const TURN = W('turn|turns|turning|turned|steer\\w*');
const MOTION = W(
  'mov\\w*|walk\\w*|run|runs|running|ran|roll\\w*|push\\w*|pull\\w*|slid\\w*|slide|fly|flies|flying|flew|swim\\w*|travel\\w*|head|heading|headed|heads|go|goes|going|went|drift\\w*|driv\\w*|sail\\w*|pan|pans|panning|panned|direction|directions|way|spin\\w*|rotat\\w*|turn\\w*|cross\\w*|flow|flows|flowing|flowed|climb\\w*|rise|rises|rising|sink\\w*|fall\\w*|ascend\\w*|descend\\w*|approach\\w*|zoom\\w*|tilt\\w*|thrown|throw\\w*|toss\\w*|motion|trajector\\w*|path|shift\\w*|swip\\w*|swing\\w*|crawl\\w*|jog\\w*|leap\\w*|jump\\w*|hop|hops|hopping|step\\w*|skat\\w*|ski|skiing|surf\\w*|ride|rides|riding|scroll\\w*|bounc\\w*|float\\w*|glid\\w*|dragg\\w*|drag',
);
// Position words that make left/right a layout question even next to a motion word.
const LAYOUT = W(
  'facing|faces|face|points|pointing|positioned|located|placed|parked|standing|sitting|sits|stands|lies|lying|hanging|worn|wears|wearing|relative to|on the left|on the right|to the left of|to the right of|left of|right of|leftmost|rightmost|left side|right side|side of|lane',
);
const BODY_SIDE = W(
  'which (?:hand|foot|leg|arm|ear|eye|wrist|shoulder|side|lane|knee|elbow|cheek|glove|shoe)|in which hand|with which hand|(?:left|right) (?:hand|foot|leg|arm|ear|eye|wrist|shoulder|knee|elbow)',
);

// --- temporal vocabulary ---
const ORDER = W(
  'before|after|afterwards|first|firstly|second|secondly|third|last|lastly|earlier|later|next|then|order|ordering|sequence|sequential\\w*|arrangement|followed|follows|precede\\w*|prior|once|finally|initially|at the (?:start|beginning|end)|in the (?:beginning|end|middle)|beginning of|end of|start of|middle of|until|subsequently|eventually',
);
const PLAYBACK = W(
  'reverse|reversed|reversing|rewound|rewind\\w*|played|playing backwards|played backwards|playback|time reversed',
);
const FORWARD_BACKWARD = W('forward|forwards|backward|backwards');
const SPEED_CHANGE = W(
  'speed\\w* up|slow\\w* down|accelerat\\w*|decelerat\\w*|faster and faster|slower and slower|gain\\w* speed|los\\w* speed',
);
const STATE_CHANGE = W(
  'how does (?:\\w+ ){0,6}change|how do (?:\\w+ ){0,6}change|state change|change\\w* over time|over time|change from|changes from|become|becomes|turns into|transition|transform\\w*',
);
const FROM_TO = /\bfrom (\w+(?: \w+){0,3}) to (\w+(?: \w+){0,3})\b/;
/**
 * Reversible action pairs: each side is an action whose time reversal is the other side (so
 * reverse changes which of them happens). Both sides present (in the question or the options)
 * is strong evidence; one side alone is weak (it may just name an activity: "folding dough").
 */
const REVERSIBLE_PAIRS: readonly (readonly [string, string])[] = [
  ['open\\w*', 'close|closes|closing|closed|shut\\w*'],
  ['put\\w* (?:\\w+ ){0,3}on|wear\\w*', 'tak\\w* (?:\\w+ ){0,3}off|took (?:\\w+ ){0,3}off|remov\\w*'],
  [
    'put\\w* (?:\\w+ ){0,3}(?:into|in)|insert\\w*|stor\\w*|drop\\w* (?:\\w+ ){0,3}(?:in|into)|pour\\w* (?:\\w+ ){0,3}into|load\\w*|pack\\w*',
    'tak\\w* (?:\\w+ ){0,3}out|took (?:\\w+ ){0,3}out|remov\\w*|pour\\w* (?:\\w+ ){0,3}out|unload\\w*|unpack\\w*|emptie\\w*|empty\\w*',
  ],
  ['fold\\w*', 'unfold\\w*'],
  ['tie|ties|tying|tied', 'untie\\w*|untying'],
  ['zip\\w*', 'unzip\\w*'],
  ['plug\\w*|connect\\w*|attach\\w*', 'unplug\\w*|disconnect\\w*|detach\\w*|pull\\w* (?:\\w+ ){0,3}out'],
  ['wrap\\w*', 'unwrap\\w*|open\\w*'],
  ['button\\w*', 'unbutton\\w*'],
  ['stack\\w*', 'unstack\\w*'],
  ['cover\\w*', 'uncover\\w*'],
  ['cap|capped|capping', 'uncap\\w*'],
  ['cork\\w*', 'uncork\\w*'],
  ['lock|locks|locking|locked', 'unlock\\w*'],
  ['screw\\w*', 'unscrew\\w*'],
  ['seal\\w*', 'unseal\\w*'],
  ['dress\\w*', 'undress\\w*'],
  ['mount\\w*', 'dismount\\w*'],
  ['fill\\w*', 'empt\\w*|drain\\w*'],
  ['inflat\\w*', 'deflat\\w*'],
  ['assembl\\w*', 'disassembl\\w*|tak\\w* apart|taken apart|fall\\w* apart'],
  [
    'build\\w*|built|construct\\w*|erect\\w*|eracted|in construction',
    'demolish\\w*|collaps\\w*|destroy\\w*|tear\\w* down',
  ],
  [
    'pick\\w* (?:\\w+ ){0,3}up|picked up|lift\\w*|rais\\w*',
    'put\\w* (?:\\w+ ){0,3}down|plac\\w* (?:\\w+ ){0,3}down|set\\w* (?:\\w+ ){0,3}down|lower\\w*|drop\\w*',
  ],
  ['melt\\w*', 'freez\\w*|frozen|refroze\\w*|solidif\\w*'],
  ['bloom\\w*|blossom\\w*', 'wilt\\w*|clos\\w*'],
  [
    'lit|light\\w* up|ignit\\w*|turn\\w* on|switch\\w* on|start\\w*',
    'blown out|blow\\w* out|extinguish\\w*|turn\\w* off|switch\\w* off|stop\\w*',
  ],
  ['crumpl\\w*|wrinkl\\w*', 'smooth\\w*|flatten\\w*'],
  ['stick\\w*|stuck', 'peel\\w*'],
  ['enter\\w*|arriv\\w*|com\\w* in', 'leav\\w*|exit\\w*|depart\\w*|go\\w* out'],
  ['appear|appears|appearing|appeared', 'disappear\\w*|vanish\\w*'],
  ['grow\\w*|expand\\w*|bigger|larger|increas\\w*|swell\\w*', 'shrink\\w*|contract\\w*|smaller|decreas\\w*'],
  ['sit\\w* down|sat down|lie\\w* down|kneel\\w*', 'stand\\w* up|stood up|get\\w* up|got up|rise|rises|rising'],
  ['tak\\w* off|takeoff', 'land|lands|landing|landed'],
  ['bright\\w*|lighter', 'dark\\w*|dim|dims|dimm\\w*'],
  ['draw\\w*|writ\\w*', 'eras\\w*'],
  ['wak\\w* up|woke up', 'fall\\w* asleep|fell asleep'],
  ['join\\w*|merg\\w*|gather\\w*', 'separat\\w*|split\\w*|scatter\\w*|spread\\w*'],
  ['dry|dries|drying|dried', 'wet|wetting|soak\\w*'],
  ['ag\\w*|older', 'younger'],
  ['accelerat\\w*|speed\\w* up', 'decelerat\\w*|slow\\w* down'],
].map(([a, b]) => [a, b] as const);
const REVERSIBLE_SIDES = REVERSIBLE_PAIRS.map(([a, b]) => [W(a), W(b)] as const);
/** Any single side, for the weak cue. */
const REVERSIBLE = W(REVERSIBLE_PAIRS.flatMap(([a, b]) => [a, b]).join('|'));

/** Order words inside options ("X and then Y", "both at the same time"). */
const ORDER_IN_OPTIONS = W(
  'then|followed by|before|after|afterwards|first|second|simultaneous\\w*|at the same time|together|no specific order',
);
/** Options that describe a change over time ("getting darker", "turning brighter", "melting"). */
const CHANGE_IN_OPTIONS = W(
  [
    '(?:getting|turning|becoming|growing|going|changing) \\w+',
    '\\w+ening',
    'dimming',
    'intensifying',
    'expanding',
    'contracting',
    'shrinking',
    'increasing',
    'decreasing',
    'melting',
    'freezing',
    'solidifying',
    'morphing',
    'aging',
    'evaporating',
    'dissolving',
    'rusting',
    'fading',
    'forming',
    'shattering',
    'reducing',
    'growing',
    'collapsing',
    'breaking',
    'withering',
    'wilting',
    'blooming',
    'splitting',
    'disappearing',
    'appearing',
    'vanishing',
    'taller',
    'shorter',
    'larger',
    'smaller',
    'bigger',
    'brighter',
    'darker',
    'lighting up',
    'burning',
    'exploding',
    'changes from',
    'changed from',
    'drying up',
    'cracking',
    'crumbling',
    'tearing apart',
    'falling apart',
    'building up',
    'filling up',
    'emptying',
    'rotting',
    'ripening',
    'from \\w+(?: \\w+){0,4} (?:to|into) \\w+',
  ].join('|'),
);
const CHANGE_IN_QUESTION = W(
  'chang\\w*|alteration|alter\\w*|transform\\w*|turning into|turn into|turns into|becom\\w*|evolv\\w*|happening to|happens to|happened to|initial|final|eventually|end up|ends up|at last|in the end|over time',
);

// --- static vocabulary ---
const COUNT = W('how many|number of|count|how often');
const ATTRIBUTE = W(
  'colou?r|colou?rs|shape|material|made of|brand|kind|type of|sort of|species|breed|texture|animal|sport|fruit|instrument|vehicle|room|weather|clothing|wearing|wear|dressed|emotion|mood|gender|profession|job|relationship|name|style|genre|food|dish|drink|occasion|place|location|take place|where is this|where are they|where does this|setting|season|time of day',
);
const TEXT = W(
  'written|writing|text|texts|subtitle\\w*|caption\\w*|logo|logos|sign|signs|signboard|label\\w*|title|titles|read|reading|say|says|said|licen[cs]e plate|plate number|scoreboard|displayed|display|letter|letters|digit|digits|brand|jersey number|printed|print|headline|menu|banner|poster',
);
const EXISTENCE =
  /^ (?:is|are|was|were) there\b|\b(?:does|do|did) (?:\w+ ){0,3}appear in the video\b|\bwhich of (?:these|the following) (?:objects|items|things) (?:is|are) (?:not )?(?:present|shown|visible|seen)\b/;
const ABS_SPEED = W('fast|faster|fastest|slow|slower|slowest|quick|quickly|quicker|slowly|speed|pace|rapidly|how fast');
const CONCURRENT = W('while|during which|when the|at the same time|as the|doing when');
const WHY = /^ (?:why|how come|what is the reason|what caused|for what reason)\b/;
const EVENT_QUESTION = /^ (?:what|which|how) (?:\w+ ){0,2}(?:do|does|did|will|would|happens|happened|happen|is|was)\b/;

const DIRECTION_WORDS = new RegExp(`${LR.source}|${VERTICAL.source}|${DEPTH.source}|${ROTATION_SENSE.source}`, 'g');

/** Distinct non-empty sets of direction words among the options (>= 2: the options differ by direction). */
const DIRECTION_WORDS_ONE = new RegExp(DIRECTION_WORDS.source);

function directionSignatures(opts: string[]): number {
  const sigs = new Set<string>();
  for (const o of opts) {
    const sig = [...new Set(o.match(DIRECTION_WORDS) ?? [])].sort().join(',');
    if (sig) sigs.add(sig);
  }
  return sigs.size;
}

const CAPTION_MATCH =
  /^ (?:which|what) (?:caption|sentence|description|statement)\b|\bmatch(?:es)? the video\b|\bdescribes? the video\b|\bessence of the video\b/;

function count(re: RegExp, texts: string[]): number {
  let n = 0;
  for (const t of texts) if (re.test(t)) n++;
  return n;
}

/** The motion axis among the question and options (see MOTION_AXES in types.ts). */
export function motionAxis(q: string, opts: string[]): MotionAxis {
  const all = [q, ...opts];
  const has = (re: RegExp): boolean => all.some((t) => re.test(t));
  if (has(ROTATION_SENSE)) return 'rotation';
  const axes: MotionAxis[] = [];
  const lr = has(LR);
  if (lr && has(TURN) && !has(ROTATION)) {
    // "turn left/right" of a walker or vehicle; a turn together with up/down is mixed.
    axes.push('turn');
  } else if (lr) axes.push('horizontal');
  if (has(VERTICAL)) axes.push('vertical');
  if (has(DEPTH)) axes.push('depth');
  if (axes.length === 0 && has(ROTATION)) return 'rotation';
  if (axes.length === 1) return axes[0];
  return 'mixed';
}

interface Evidence {
  scores: Record<RouteType, number>;
  cues: string[];
}

function add(e: Evidence, type: RouteType, weight: number, cue: string): void {
  e.scores[type] += weight;
  e.cues.push(`${cue}->${type}`);
}

/**
 * Classifies one question (with its options). Pure and synchronous; a few dozen regex tests per
 * text, 20-50 us per question (bench/router).
 */
export function classifyByRules(question: string, options: readonly string[]): Classification {
  const q = normalise(question);
  const opts = options.map(normalise);
  const all = [q, ...opts];
  const optShare = (re: RegExp): number => (opts.length ? count(re, opts) / opts.length : 0);
  const e: Evidence = { scores: { spatial: 0, temporal: 0, spatiotemporal: 0, static: 1 }, cues: [] };

  const yesNo = opts.length === 2 && opts.every((o) => o === ' yes ' || o === ' no ');
  // Caption matching ("Which caption matches the video better?"): the question says nothing, each
  // option is a statement about the video, and one option alone may carry the dynamic cue.
  const captionMatch = CAPTION_MATCH.test(q);
  const motionQ = MOTION.test(q);
  const motionAny = motionQ || count(MOTION, opts) > 0;
  const lrAny = all.some((t) => LR.test(t));
  const vertAny = all.some((t) => VERTICAL.test(t));
  const depthAny = all.some((t) => DEPTH.test(t));
  const rotSense = all.some((t) => ROTATION_SENSE.test(t));
  const dirAny = lrAny || vertAny || depthAny || rotSense;
  const layout = LAYOUT.test(q) || BODY_SIDE.test(q);
  const text = TEXT.test(q) && !captionMatch;
  // "forward or backward" is playback direction unless something moves (the camera, a car).
  const playback =
    PLAYBACK.test(q) || (all.some((t) => FORWARD_BACKWARD.test(t)) && !motionAny && !/\bcamera\b/.test(q));

  // Static heads: what is asked is a property that survives both transforms.
  if (COUNT.test(q)) add(e, 'static', 5, 'count');
  const yesNoChange = yesNo && CHANGE_IN_OPTIONS.test(q) && !(FROM_TO.test(q) && DIRECTION_WORDS_ONE.test(q));
  if (ATTRIBUTE.test(q) && !STATE_CHANGE.test(q) && !CHANGE_IN_QUESTION.test(q) && !yesNoChange)
    add(e, 'static', 4, 'attribute');
  if (text && /^ what\b/.test(q) && !ORDER.test(q)) add(e, 'static', 4, 'text');
  if (EXISTENCE.test(q)) add(e, 'static', 4, 'existence');
  if (ABS_SPEED.test(q) && !SPEED_CHANGE.test(q) && !all.some((t) => SPEED_CHANGE.test(t)))
    add(e, 'static', 4, 'absolute-speed');
  if (CONCURRENT.test(q) && /\b(?:doing|do|does|did)\b/.test(q) && !ORDER.test(q))
    add(e, 'static', 3, 'concurrent-activity');
  if (WHY.test(q)) add(e, 'static', 3, 'why');

  // Temporal: order, reversible actions, playback, speed change, state change.
  if (ORDER.test(q)) {
    add(e, 'temporal', 3, 'order');
    if (
      (q.match(new RegExp(ORDER.source, 'g')) ?? []).length >= 2 ||
      /\b(?:sequence|order|and then|followed by|before|after)\b/.test(q)
    )
      add(e, 'temporal', 2, 'order-emphasis');
    if (EVENT_QUESTION.test(q)) add(e, 'temporal', 2, 'event-order');
  }
  // Reversible actions: both sides of a pair named (strong), or one side in the question (weak).
  const joined = all.join(' ');
  const pairHit = REVERSIBLE_SIDES.some(([a, b]) => a.test(joined) && b.test(joined));
  const revQ = REVERSIBLE.test(q);
  if (pairHit) add(e, 'temporal', 4, 'reversible-pair');
  else if (revQ) add(e, 'temporal', 2, 'reversible-action');
  if (playback) add(e, 'temporal', 5, 'playback');
  if (SPEED_CHANGE.test(q) || optShare(SPEED_CHANGE) >= 0.5) add(e, 'temporal', 5, 'speed-change');
  const fromTo = opts.filter((o) => {
    const m = FROM_TO.exec(o);
    return m !== null && !LR.test(o) && !VERTICAL.test(o) && !DEPTH.test(o);
  }).length;
  if (STATE_CHANGE.test(q) || fromTo >= 2) add(e, 'temporal', 5, 'state-change');
  else if (CHANGE_IN_QUESTION.test(q)) add(e, 'temporal', 4, 'change-question');
  if (count(ORDER_IN_OPTIONS, opts) >= (captionMatch ? 1 : 2)) add(e, 'temporal', 4, 'order-in-options');
  // A change over time described by the options (or, for yes/no, by the question's statement);
  // "from left to right" is a direction, not a change of state.
  const statements = yesNo ? [q] : opts;
  const changing = statements.filter(
    (o) => CHANGE_IN_OPTIONS.test(o) && !(FROM_TO.test(o) && DIRECTION_WORDS_ONE.test(o)),
  ).length;
  if (changing >= (yesNo || captionMatch ? 1 : 2) && !(motionQ && dirAny))
    add(e, 'temporal', yesNo ? 2 : 3, 'change-in-options');

  // Spatiotemporal: a motion word with a direction.
  if (dirAny && motionQ) add(e, 'spatiotemporal', 4, 'motion-direction');
  else if (captionMatch && opts.some((o) => MOTION.test(o) && DIRECTION_WORDS_ONE.test(o)))
    add(e, 'spatiotemporal', 4, 'motion-direction-in-a-caption');
  else if (dirAny && motionAny && directionSignatures(opts) >= 2)
    add(e, 'spatiotemporal', optShare(MOTION) >= 0.5 ? 4 : 2, 'motion-direction-in-options');
  if (rotSense) add(e, 'spatiotemporal', 2, 'rotation-sense');
  if (/\bcamera\b/.test(q) && all.some((t) => /\b(?:pan\w*|tilt\w*|zoom\w*|dolly|truck\w*)\b/.test(t)))
    add(e, 'spatiotemporal', 3, 'camera-motion');
  if (lrAny && optShare(MOTION) >= 0.5 && optShare(LR) >= 0.5) add(e, 'spatiotemporal', 2, 'options-move-sideways');

  // Spatial: left/right with no motion, or a layout cue.
  if (lrAny && !motionAny) add(e, 'spatial', 4, 'left-right-layout');
  if (lrAny && layout && !motionQ) add(e, 'spatial', 3, 'position');
  if (BODY_SIDE.test(q) && !motionQ) add(e, 'spatial', 2, 'body-side');
  if (
    /\b(?:facing|faces|pointing)\b|^ (?:which|what) (?:direction|way)\b.*\bpoints? $|\bpoints? (?:at|toward|towards)\b/.test(
      q,
    )
  )
    add(e, 'spatial', 5, 'facing');

  const ranked = (Object.keys(e.scores) as RouteType[]).sort(
    (a, b) => e.scores[b] - e.scores[a] || order(a) - order(b),
  );
  const type = ranked[0];
  const top = e.scores[type];
  const margin = top - e.scores[ranked[1]];
  const noCue = e.cues.length === 0;
  const confidence = noCue ? 0.55 : Math.min(0.97, Math.max(0.3, 0.5 + 0.08 * margin + 0.02 * top));

  const out: Classification = {
    type,
    confidence: round2(confidence),
    rationale: noCue ? 'no dynamic cue: static by default' : e.cues.join(', '),
  };
  if (type === 'spatiotemporal') {
    out.axis = motionAxis(q, opts);
    out.rationale += `; axis ${out.axis}`;
  }
  if (type === 'static') {
    const pref = staticPreference(question, options);
    out.text = pref.text;
    if (pref.prefer) {
      out.prefer = pref.prefer;
      out.rationale += `; prefer ${pref.prefer}${pref.text ? ' (text)' : ''}`;
    }
  }
  return out;
}

/**
 * For a static question: does it ask about text (then reverse, since hflip mirrors text), and
 * which transform keeps its own words true ("the car on the left" breaks under hflip, "the ball
 * that moves up" or "what happens first" under reverse)? Used for every backend's static answers.
 */
export function staticPreference(
  question: string,
  options: readonly string[] = [],
): { text: boolean; prefer?: 'hflip' | 'reverse' } {
  const q = normalise(question);
  const all = [q, ...options.map(normalise)];
  const any = (re: RegExp): boolean => all.some((t) => re.test(t));
  const text = TEXT.test(q) && !CAPTION_MATCH.test(q);
  if (text) return { text, prefer: 'reverse' };
  const motionQ = MOTION.test(q);
  const mentionsLR = LR.test(q);
  const mentionsTime =
    ORDER.test(q) ||
    (motionQ && (any(VERTICAL) || any(DEPTH) || any(LR))) ||
    REVERSIBLE.test(q) ||
    CHANGE_IN_QUESTION.test(q);
  if (mentionsLR && !mentionsTime) return { text, prefer: 'reverse' };
  if (mentionsTime && !mentionsLR) return { text, prefer: 'hflip' };
  return { text };
}

// Tie-break: the dynamic type with the narrower transform set first, static last.
function order(t: RouteType): number {
  return t === 'spatiotemporal' ? 0 : t === 'temporal' ? 1 : t === 'spatial' ? 2 : 3;
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
