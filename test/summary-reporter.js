// Prints, after the run, why tests were skipped (grouped by reason; test/helpers/skip.ts puts the
// reason in a skipped test's name) and then the closing line CI reads:
// "N passed, N failed, N skipped" (jest's own summary is not read).
const path = require('path');

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const byReason = new Map(); // reason -> { count, files:Set }
    for (const file of results.testResults) {
      const rel = path.relative(process.cwd(), file.testFilePath);
      for (const t of file.testResults) {
        if (t.status !== 'pending' && t.status !== 'todo' && t.status !== 'skipped') continue;
        const m = /\(skipped: (.*)\)$/.exec(t.title);
        const reason = m ? m[1] : 'no reason in the name (it.skip, or filtered out by -t)';
        const entry = byReason.get(reason) ?? { count: 0, files: new Set() };
        entry.count++;
        entry.files.add(rel);
        byReason.set(reason, entry);
      }
    }
    if (byReason.size) process.stdout.write('\nSkipped tests, by reason:\n');
    for (const [reason, e] of byReason) {
      process.stdout.write(`  ${e.count} skipped: ${reason} (${[...e.files].join(', ')})\n`);
    }
    const passed = results.numPassedTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const skipped = results.numPendingTests + results.numTodoTests;
    process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
module.exports = SummaryReporter;
