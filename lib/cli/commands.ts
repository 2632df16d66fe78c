/**
 * The CLI's command table. Each command lives in its own module under ./commands and is loaded
 * only when it runs (startup stays fast and a missing optional dependency only affects its command).
 * A module exports `builder(yargs)` and `handler(argv)`.
 */
export interface CommandEntry {
  /** yargs command string, e.g. 'route <input>'. */
  command: string;
  describe: string;
  /** Module path relative to this file. */
  module: string;
}

export const COMMANDS: CommandEntry[] = [
  {
    command: 'doctor',
    describe: 'Show Node, addons, libtorch, CUDA, BLAS and thread settings',
    module: './commands/doctor',
  },
  {
    command: 'demo',
    describe: 'Synthetic DyBench -> base model -> CRPO (and GRPO) post-training -> Acc / P-Acc / sensitivity, on CPU',
    module: './commands/demo',
  },
  {
    command: 'eval [data]',
    describe: 'Evaluate a served model or checkpoint on a DyBench JSONL: Acc / P-Acc per category',
    module: './commands/eval',
  },
  {
    command: 'synth',
    describe: 'Write a synthetic DyBench split (paired counterfactual clips) as JSONL + PNG frames',
    module: './commands/synth',
  },
  {
    command: 'dybench',
    describe: 'Build paired DyBench data from your clips, import released configs / TimeBlind, validate JSONL',
    module: './commands/dybench',
  },
  {
    command: 'dist <action>',
    describe: 'Distributed runs: `crpo dist check` checks the c10d process group (torchrun, srun or --nproc N)',
    module: './commands/dist',
  },
  {
    command: 'route <input> [more..]',
    describe:
      'Task Router: add `route` (type, transform) to DyBench records; `crpo route eval <labelled.jsonl>` for accuracy',
    module: './commands/route',
  },
  {
    command: 'serve <checkpoint>',
    describe:
      'Serve a trained checkpoint or a Hugging Face Qwen folder as an OpenAI-compatible /v1/chat/completions endpoint (127.0.0.1)',
    module: './commands/serve',
  },
  {
    command: 'hf <action>',
    describe: '`crpo hf init`: write a random-initialised Qwen2.5-VL / Qwen3-VL folder with published shapes',
    module: './commands/hf',
  },
  {
    command: 'train',
    describe: 'Post-train a policy with CRPO or a baseline (grpo, grpo-2g, t-grpo, arrowrl, crpo-no-dual)',
    module: './commands/train',
  },
  {
    command: 'sft',
    describe: 'Supervised warm start: train the native tiny policy on synthetic DyBench, report Acc / P-Acc',
    module: './commands/sft',
  },
  {
    command: 'bench <action>',
    describe:
      "Where a CRPO step's time and memory go: `bench rollout` (phase timings), `bench ops` (kernels), `bench plan` (memory per device)",
    module: './commands/bench',
  },
  {
    command: 'reproduce',
    describe:
      'Small-scale reproduction of the main comparison (GRPO, GRPO-2G, T-GRPO, ArrowRL, CRPO, CRPO w/o dual) on synthetic DyBench',
    module: './commands/reproduce',
  },
];
