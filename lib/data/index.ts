/**
 * DyBench data (docs/data-format.md): the record schema, per-category rules, the strict/lenient
 * JSONL loader, and the atomic/durable JSONL writers.
 */
export * from './schema';
export * from './categories';
export * from './jsonl';
export * from './loader';
