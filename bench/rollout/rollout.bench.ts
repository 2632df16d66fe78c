/**
 * One CRPO step of the native tiny policy timed by phase (`npm run bench -- rollout`): exactly
 * `crpo bench rollout` with its defaults (lib/bench/rollout.ts), written to
 * bench/results/rollout.{json,md} for docs/benchmarks.md, so the docs and a user's numbers come
 * from the same code.
 */
import { benchRollout, formatRolloutBench } from '../../lib/bench/rollout';
import { writeResults } from '../harness';

async function main(): Promise<void> {
  const r = await benchRollout({}, { log: (m) => process.stderr.write(m + '\n') });
  const md = [
    '### One CRPO step by phase (`bench/rollout`, `crpo bench rollout`)',
    '',
    'Reproduce: `npx crpo bench rollout` (defaults) or `npm run bench -- rollout`.',
    '',
    '```text',
    formatRolloutBench(r),
    '```',
  ].join('\n');
  writeResults('rollout', r, md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
