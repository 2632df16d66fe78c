/**
 * Tests run from TypeScript sources through ts-jest (transpile only: `npm run lint` type-checks).
 * One worker: each worker would load libtorch again, and there are 2 cores (native-notes.md).
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { diagnostics: false }] },
  maxWorkers: 1,
  testTimeout: 120000,
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
};
