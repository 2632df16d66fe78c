export function planMemory(_o: unknown): unknown { throw new Error('todo'); }
export function formatPlan(_r: unknown): string { return ''; }
export function planOptionsFromFlags(a: unknown): unknown { return a; }
