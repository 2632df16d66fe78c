/**
 * The native policy's test harnesses (native/torch/model/checks/) live in the test-only addon
 * crpo_torch_checks.node, not in the production crpo_torch.node: the production addon has no
 * policyGradCheck, the checks addon runs it through lib/model policyGradCheck, and it shares the
 * torch addon's model code (one live-handle registry: a check leaves no policy behind).
 */
import { torchAddon, torchChecksAddon } from '../../lib/native';
import { livePolicies, policyGradCheck } from '../../lib/model';
import { itWithNativePolicy } from '../helpers/native-policy';

const maybe = itWithNativePolicy('checks addon');

describe('test-only checks addon', () => {
  maybe('the production addon has no check function; the checks addon has it', async () => {
    expect((torchAddon() as unknown as Record<string, unknown>).policyGradCheck).toBeUndefined();
    const checks = torchChecksAddon();
    expect(checks.kind).toBe('torch-checks');
    const before = livePolicies();
    const r = await policyGradCheck('fast:train_step', 9);
    expect(r.checked).toBeGreaterThan(0);
    expect(r.maxError).toBeLessThan(1e-4);
    expect(livePolicies()).toBe(before);
  });
});
