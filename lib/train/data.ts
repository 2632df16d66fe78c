/**
 * Training and validation data for the trainer: DyBench records with decoded frames and the
 * counterfactual route of each question (crpo-method.md section 2: transform + relation), the
 * seeded epoch order, and the shard of a batch one process works on (single process by default;
 * lib/distributed supplies rank / world size). Routes come from the record's `route` object (written by
 * the Task Router), else from the synthetic generator's `meta.counterfactual`, else from the
 * router's rules backend called synchronously.
 */
import { CrpoError } from '../errors';
import { loadRecords, formatIssue } from '../data/loader';
import type { DyBenchRecord } from '../data/schema';
import type { DistContext } from '../distributed';
import { defaultFrameLoader } from '../eval/frames';
import { synthesize } from '../synth';
import { Rng } from '../random';
import { isVideoTransform, transformFramesSync } from '../counterfactual';
import type { VideoTransformName } from '../native';
import { routeRecord } from '../router';
import type { TrainConfig } from './config';

export interface ItemRoute {
  transform: VideoTransformName;
  relation: 'change' | 'same';
  /** 'swap' only: first frame of the second segment. */
  swapAt?: number;
}

export interface TrainItem {
  record: DyBenchRecord;
  /** uint8 [T, H, W, 3] */
  frames: Uint8Array;
  shape: [number, number, number, 3];
  route: ItemRoute;
  /** Counterfactual frames, made once on first use. */
  cfFrames?: Uint8Array;
  /** Reversed frames (ArrowRL), made once on first use. */
  reversed?: Uint8Array;
}

export interface ValItem {
  record: DyBenchRecord;
  frames: Uint8Array;
  shape: [number, number, number, 3];
}

/** The counterfactual route of a record: its `route`, the generator's `meta.counterfactual`, else the rules router. */
export function routeOf(r: DyBenchRecord, where: string, seed = 0): ItemRoute {
  const route = r.route as { transform?: string; relation?: string } | undefined;
  if (
    route &&
    typeof route === 'object' &&
    isVideoTransform(route.transform) &&
    (route.relation === 'change' || route.relation === 'same')
  ) {
    return { transform: route.transform, relation: route.relation };
  }
  const cf = r.meta?.counterfactual as { transform?: string; relation?: string; swap_at?: number } | undefined;
  if (cf && isVideoTransform(cf.transform) && (cf.relation === 'change' || cf.relation === 'same')) {
    return { transform: cf.transform, relation: cf.relation, swapAt: cf.swap_at };
  }
  // Neither: the Task Router's rules backend, synchronously (crpo-method.md section 2).
  try {
    const routed = routeRecord({ id: r.id, question: r.question, options: r.options }, { backend: 'rules', seed });
    return { transform: routed.transform, relation: routed.relation };
  } catch (err) {
    throw new CrpoError(
      'ERR_CRPO_NO_ROUTE',
      `${where}: record '${r.id}' has no counterfactual route and the Task Router could not route it (${(err as Error).message}); add a 'route' object with \`crpo route\``,
    );
  }
}

/**
 * The counterfactual of an item as a transform name for a policy that transforms on its device
 * (PolicyPrompt.transform): the same clip as counterfactualFrames, made where the tensors live.
 */
export function deviceTransform(item: TrainItem): { transform: VideoTransformName; swapAt?: number } {
  const { transform, swapAt } = item.route;
  // 'swap' without a boundary: the middle frame, as transformFramesSync defaults it
  return transform === 'swap' ? { transform, swapAt: swapAt ?? Math.floor(item.shape[0] / 2) } : { transform };
}

/** The counterfactual frames of an item (cached on the item), for a policy without device transforms. */
export function counterfactualFrames(item: TrainItem): Uint8Array {
  if (!item.cfFrames) {
    item.cfFrames = transformFramesSync(item.frames, {
      shape: [1, ...item.shape],
      transform: item.route.transform,
      swapAt: item.route.swapAt,
    }) as Uint8Array;
  }
  return item.cfFrames;
}

/** Frames played backwards (ArrowRL's second branch). */
export function reversedFrames(item: TrainItem): Uint8Array {
  item.reversed ??= transformFramesSync(item.frames, { shape: [1, ...item.shape], transform: 'reverse' }) as Uint8Array;
  return item.reversed;
}

/** Frames in a seeded random order (T-GRPO's second branch). */
export function shuffledFrames(item: TrainItem, rng: Rng): Uint8Array {
  const [T, H, W, C] = item.shape;
  const frame = H * W * C;
  const order = rng.shuffle(Array.from({ length: T }, (_, t) => t));
  const out = new Uint8Array(item.frames.length);
  order.forEach((src, dst) => out.set(item.frames.subarray(src * frame, (src + 1) * frame), dst * frame));
  return out;
}

async function loadJsonl(file: string, frames: number): Promise<ValItem[]> {
  const res = await loadRecords(file);
  if (res.issues.length > 0)
    throw new CrpoError(
      'ERR_CRPO_BAD_DATA',
      `${res.issues.length} invalid record(s); first: ${formatIssue(res.issues[0])}`,
    );
  const load = defaultFrameLoader({ frames });
  const out: ValItem[] = [];
  for (const record of res.records) {
    const v = await load(record);
    out.push({ record, frames: v.frames, shape: v.shape });
  }
  return out;
}

/** Training items (original members only) and validation items (every member). */
export async function loadTrainData(c: TrainConfig): Promise<{ train: TrainItem[]; val: ValItem[] }> {
  const d = c.data;
  const shape: [number, number, number, 3] = [d.frames, d.size, d.size, 3];
  let trainRaw: ValItem[];
  if (d.train === 'synthetic') {
    trainRaw = synthesize({
      split: 'train',
      pairs: d.pairs,
      seed: d.seed,
      frames: d.frames,
      size: d.size,
      shortcutP: d.shortcutP,
    }).map((x) => ({ record: x.record, frames: x.frames, shape }));
  } else {
    trainRaw = await loadJsonl(d.train, d.frames);
  }
  const train = trainRaw
    .filter((x) => x.record.transform === 'none')
    .map((x) => ({
      ...x,
      route: routeOf(x.record, d.train === 'synthetic' ? 'synthetic train split' : d.train, c.seed),
    }));
  if (train.length === 0)
    throw new CrpoError('ERR_CRPO_BAD_DATA', `${d.train}: no original (transform 'none') records to train on`);
  let val: ValItem[] = [];
  if (d.val === 'synthetic') {
    if (d.valPairs > 0)
      val = synthesize({ split: 'test', pairs: d.valPairs, seed: d.seed + 1000, frames: d.frames, size: d.size }).map(
        (x) => ({ record: x.record, frames: x.frames, shape }),
      );
  } else if (d.val !== '') {
    val = await loadJsonl(d.val, d.frames);
  }
  return { train, val };
}

/** Indices of the prompts of step `step`: consecutive positions of a seeded per-epoch permutation. */
export function batchIndices(n: number, batchSize: number, seed: number, step: number): number[] {
  const out: number[] = [];
  let pos = step * batchSize;
  let epoch = -1,
    order: number[] = [];
  for (let i = 0; i < batchSize; i++, pos++) {
    const e = Math.floor(pos / n);
    if (e !== epoch) {
      epoch = e;
      order = new Rng(`crpo-train|${seed}|epoch|${e}`).shuffle(Array.from({ length: n }, (_, k) => k));
    }
    out.push(order[pos % n]);
  }
  return out;
}

/**
 * What the trainer uses of a multi-process run (which process this is, how to split a batch, how to
 * combine metrics): the part of lib/distributed's DistContext (initDistributed) it reads, so that one is
 * passed as is; SINGLE_PROCESS stands in for it in a single process.
 */
export type TrainDistContext = Pick<DistContext, 'rank' | 'worldSize' | 'allReduceSum'> &
  Partial<Pick<DistContext, 'nativeGroupId'>>;

export const SINGLE_PROCESS: TrainDistContext = { rank: 0, worldSize: 1, allReduceSum: async (v) => v };

/**
 * This rank's share of a batch: a contiguous block of whole prompt groups (both branches of a
 * prompt stay on one rank), the same split as lib/distributed shardPromptGroups.
 */
export function shardBatch<T>(batch: readonly T[], dist: Pick<TrainDistContext, 'rank' | 'worldSize'>): T[] {
  const n = batch.length,
    base = Math.floor(n / dist.worldSize),
    extra = n % dist.worldSize;
  const start = dist.rank * base + Math.min(dist.rank, extra);
  return batch.slice(start, start + base + (dist.rank < extra ? 1 : 0));
}
