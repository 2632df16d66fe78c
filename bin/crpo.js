#!/usr/bin/env node
'use strict';
const args = process.argv.slice(2);
// Training commands run in a child started with the malloc settings glibc reads at start-up (lib/cli/relaunch.ts).
if (!require('../dist/cli/relaunch.js').relaunchWithTrainingMalloc(__filename, args)) {
  require('../dist/cli/main.js').main(args);
}
