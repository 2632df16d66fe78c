/**
 * Loads TypeScript sources in a child process (transpile only, like ts-jest with isolatedModules),
 * so the e2e router tests can run the real CLI from lib/ without a build step.
 */
'use strict';
const fs = require('fs');
const ts = require('typescript');
require.extensions['.ts'] = function (module, filename) {
  const src = fs.readFileSync(filename, 'utf8');
  const out = ts.transpileModule(src, {
    fileName: filename,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      sourceMap: false,
    },
  });
  module._compile(out.outputText, filename);
};
