/**
 * One method x seed of `crpo reproduce`, in its own process (the `jobs` option of reproduce):
 * `node worker.js <out> <method> <seed> [--fresh]`. The parent has written the settings and made
 * the base model in <out>; the run's result.json is the output. Exit code 0 on success, 1 with the
 * error on stderr otherwise.
 */
import { runReproduceJob } from './index';

const [out, method, seed, flag] = process.argv.slice(2);
if (!out || !method || !/^\d+$/.test(seed ?? '')) {
  process.stderr.write('usage: worker <out> <method> <seed> [--fresh]\n');
  process.exit(2);
}
runReproduceJob(out, method, Number(seed), flag === '--fresh').then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${method} seed ${seed}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
