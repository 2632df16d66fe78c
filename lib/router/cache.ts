/**
 * The router's answer cache: content-addressed (sha256 of question, options, backend, model and
 * prompt version) and append-only JSONL, each answer fsynced as soon as it arrives, so a killed
 * run resumes without asking the model again. Opening tolerates a torn last line (a crash in the
 * middle of a write): it is cut off and reported; a damaged line elsewhere is skipped and
 * reported. Later lines win over earlier ones with the same key.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import { JsonlAppender } from '../data/jsonl';
import { CrpoError } from '../errors';
import { MOTION_AXES, ROUTE_TRANSFORMS, ROUTE_TYPES, type Classification } from './types';

/** The content address of one routing question for one backend/model/prompt. */
export function cacheKey(
  question: string,
  options: readonly string[],
  backend: string,
  model: string,
  promptVersion: string,
): string {
  return createHash('sha256')
    .update(JSON.stringify([question, options, backend, model, promptVersion]))
    .digest('hex');
}

export interface CacheEntry {
  key: string;
  backend: string;
  model: string;
  promptVersion: string;
  classification: Classification;
  /** Set when the answer is the rules fallback after invalid LLM replies. */
  fallback?: string;
  /** Requests spent on this answer. */
  requests: number;
  at: string;
}

export interface CacheOpenReport {
  file: string;
  entries: number;
  /** Bytes of a torn last line that were cut off (0 when the file ended cleanly). */
  tornBytes: number;
  /** Damaged lines elsewhere in the file (1-based), skipped. */
  badLines: number[];
}

function isEntry(v: unknown): v is CacheEntry {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Partial<CacheEntry>;
  const c = e.classification as Partial<Classification> | undefined;
  return (
    typeof e.key === 'string' &&
    /^[0-9a-f]{64}$/.test(e.key) &&
    typeof c === 'object' &&
    c !== null &&
    (ROUTE_TYPES as readonly string[]).includes(c.type as string) &&
    typeof c.confidence === 'number' &&
    (c.axis === undefined || (MOTION_AXES as readonly string[]).includes(c.axis)) &&
    (c.proposedTransform === undefined || (ROUTE_TRANSFORMS as readonly string[]).includes(c.proposedTransform))
  );
}

export class RouterCache {
  private constructor(
    readonly file: string,
    private readonly map: Map<string, CacheEntry>,
    private readonly appender: JsonlAppender,
    readonly report: CacheOpenReport,
  ) {}

  /** Opens (or creates) the cache file, loading every whole entry and cutting a torn tail. */
  static async open(file: string): Promise<RouterCache> {
    const map = new Map<string, CacheEntry>();
    const badLines: number[] = [];
    let text = '';
    try {
      text = await fs.promises.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new CrpoError('ERR_CRPO_CACHE', `Cannot read router cache ${file}: ${(err as Error).message}`);
    }
    const lines = text.split('\n');
    // The part after the last '\n' is a torn line when non-empty; JsonlAppender.open cuts it.
    const tail = lines.pop() ?? '';
    lines.forEach((line, i) => {
      if (line.trim() === '') return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        badLines.push(i + 1);
        return;
      }
      if (isEntry(v)) map.set(v.key, v);
      else badLines.push(i + 1);
    });
    const appender = await JsonlAppender.open(file);
    const tornBytes = Buffer.byteLength(tail, 'utf8');
    if (appender.repairedBytes !== tornBytes) {
      // Another writer changed the file between our read and the repair: refuse rather than guess.
      await appender.close();
      throw new CrpoError(
        'ERR_CRPO_CACHE',
        `Router cache ${file} changed while it was opened (is another run using it?)`,
      );
    }
    return new RouterCache(file, map, appender, { file, entries: map.size, tornBytes, badLines });
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): CacheEntry | undefined {
    return this.map.get(key);
  }

  /** Records an answer durably (fsynced before the promise resolves). */
  async put(entry: CacheEntry): Promise<void> {
    this.map.set(entry.key, entry);
    await this.appender.append(entry);
  }

  close(): Promise<void> {
    return this.appender.close();
  }
}

/** One line for logs: "cache .crpo-cache/router.jsonl: 120 entries; cut a torn last line (37 bytes)". */
export function formatCacheReport(r: CacheOpenReport): string {
  const parts = [`cache ${r.file}: ${r.entries} entr${r.entries === 1 ? 'y' : 'ies'}`];
  if (r.tornBytes > 0) parts.push(`cut a torn last line (${r.tornBytes} bytes) left by an interrupted run`);
  if (r.badLines.length > 0)
    parts.push(
      `skipped ${r.badLines.length} damaged line(s): ${r.badLines.slice(0, 10).join(', ')}${r.badLines.length > 10 ? ', ...' : ''}`,
    );
  return parts.join('; ');
}
