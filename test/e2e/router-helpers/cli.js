/** Runs the crpo CLI from the TypeScript sources (used by the router e2e tests as a child process). */
'use strict';
require('./ts-register');
require('../../../lib/cli/main.ts').main(process.argv.slice(2));
