export async function benchVsPytorch(_c: unknown, _h: unknown): Promise<unknown> { return {}; }
export function formatVsPytorch(_v: unknown): string { return ''; }
