/**
 * Foundation ops benchmark (`npm run bench -- ops`): the measurement of `crpo bench ops`
 * (lib/bench/ops.ts: counterfactual ops vs memcpy and a naive TS loop, the fused CRR kernel vs
 * its TS reference), written to bench/results/ops.{json,md} for docs/benchmarks.md, so the docs
 * and a user's `crpo bench ops` come from the same code.
 */
import { benchOps, formatOpsBench } from '../../lib/bench/ops';
import { writeResults } from '../harness';

async function main(): Promise<void> {
  const r = await benchOps({ device: 'cpu', runs: 9 }, { log: (m) => process.stderr.write(m + '\n') });
  writeResults(
    'ops',
    r,
    formatOpsBench(r, '### Counterfactual ops and the CRR kernel (`bench/ops`, `crpo bench ops`)'),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
