/**
 * The policy benchmarks' set-up and the hand-over to the PyTorch twin live in
 * lib/bench/pytorch-twin.ts, shared with `crpo bench rollout --vs-pytorch`.
 */
export * from '../../lib/bench/pytorch-twin';
