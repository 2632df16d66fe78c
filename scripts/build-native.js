#!/usr/bin/env node
// Builds the two native addons. Runs on `npm install` / `npm ci`.
//   core  (node-gyp, binding.gyp): dependency-free; always built when a C++ compiler exists.
//   torch (cmake-js, CMakeLists.txt): built when libtorch is found ($LIBTORCH, CMAKE_PREFIX_PATH,
//         or the system libtorch-dev); otherwise skipped with the exact fix printed.
// Both build offline: node-gyp gets --nodedir from this node's own headers, cmake-js uses the
// node-api-headers package (package.json "binary.napi_versions").
// An addon built from the same sources (none modified since that build started) for the same
// libtorch is kept as it is ("up to date"), so running the install script again (npm exec of the package's own bin runs
// it too) costs nothing; --force rebuilds anyway.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : null;
const force = args.includes('--force') || process.env.CRPO_BUILD_FORCE === '1';
const jobs = String(process.env.CRPO_BUILD_JOBS || 2);

function log(msg) {
  process.stderr.write(`[crpo build] ${msg}\n`);
}

function run(cmd, cmdArgs, env) {
  log(`${cmd} ${cmdArgs.join(' ')}`);
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) throw r.error;
  return r.status === 0;
}

function bin(name) {
  const local = path.join(root, 'node_modules', '.bin', name);
  return fs.existsSync(local) ? local : name;
}

function nodeHeadersDir() {
  // The directory holding include/node/node_api.h for the running node, if present.
  const prefix = path.dirname(path.dirname(process.execPath));
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null;
}

function torchCandidates() {
  const found = [];
  if (process.env.LIBTORCH) found.push(process.env.LIBTORCH);
  for (const p of (process.env.CMAKE_PREFIX_PATH || '').split(':').filter(Boolean)) found.push(p);
  found.push(
    '/usr/lib/x86_64-linux-gnu/cmake/Torch',
    '/usr/lib/aarch64-linux-gnu/cmake/Torch',
    '/usr/share/cmake/Torch',
  );
  return found;
}

function hasTorch() {
  return torchCandidates().some(
    (p) =>
      fs.existsSync(path.join(p, 'TorchConfig.cmake')) ||
      fs.existsSync(path.join(p, 'share', 'cmake', 'Torch', 'TorchConfig.cmake')) ||
      fs.existsSync(path.join(p, 'lib', 'cmake', 'Torch', 'TorchConfig.cmake')),
  );
}

// Newest modification time among the files an addon is built from.
function newestSource(extra) {
  let newest = 0;
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ['native', 'binding.gyp', 'CMakeLists.txt', 'package.json', 'scripts/build-native.js', ...extra]) {
    const full = path.join(root, p);
    if (fs.existsSync(full)) visit(full);
  }
  return newest;
}

// True when every file of `addons` exists and the stamp records the same settings and the same newest
// source (read before that build started, so a file edited during a build makes the next one run).
function upToDate(addons, stampFile, settings) {
  if (force) return false;
  const stamp = path.join(root, stampFile);
  if (![].concat(addons).every((a) => fs.existsSync(path.join(root, a))) || !fs.existsSync(stamp)) return false;
  return fs.readFileSync(stamp, 'utf8') === JSON.stringify({ ...settings, newestSource: newestSource([]) });
}

function writeStamp(stampFile, settings) {
  const stamp = path.join(root, stampFile);
  fs.mkdirSync(path.dirname(stamp), { recursive: true });
  fs.writeFileSync(`${stamp}.tmp`, JSON.stringify(settings));
  fs.renameSync(`${stamp}.tmp`, stamp);
}

function buildCore() {
  const settings = { node: process.versions.modules, compiler: process.env.CXX || 'c++' };
  const sourcesAtStart = newestSource([]);
  if (upToDate('build/Release/crpo_core.node', 'build/crpo-build.json', settings)) {
    log('core addon up to date (build/Release/crpo_core.node; --force rebuilds)');
    return true;
  }
  const nodedir = nodeHeadersDir();
  const gypArgs = ['rebuild', `-j`, jobs];
  if (nodedir) gypArgs.push(`--nodedir=${nodedir}`);
  if (!run(bin('node-gyp'), gypArgs)) {
    log(
      'core addon failed to build: a C++17 compiler, make and python3 are needed (apt-get install g++ make python3).',
    );
    return false;
  }
  writeStamp('build/crpo-build.json', { ...settings, newestSource: sourcesAtStart });
  return true;
}

function buildTorch() {
  if (!hasTorch()) {
    log(
      'libtorch not found: torch addon skipped (training needs it). Fix: apt-get install libtorch-dev, or set LIBTORCH=/path/to/libtorch and run npm run build:torch',
    );
    return true;
  }
  const settings = {
    node: process.versions.modules,
    libtorch: process.env.LIBTORCH || '',
    prefix: process.env.CMAKE_PREFIX_PATH || '',
    compiler: process.env.CXX || 'c++',
  };
  const sourcesAtStart = newestSource([]);
  const torchOutputs = ['build-torch/Release/crpo_torch.node', 'build-torch/Release/crpo_torch_checks.node'];
  if (upToDate(torchOutputs, 'build-torch/crpo-build.json', settings)) {
    log('torch addon up to date (build-torch/Release/crpo_torch.node, crpo_torch_checks.node; --force rebuilds)');
    return true;
  }
  // Same settings as the last build: cmake-js build recompiles only what changed; otherwise configure anew.
  const stamp = path.join(root, 'build-torch', 'crpo-build.json');
  let sameSettings = false;
  try {
    const { newestSource: _, ...last } = JSON.parse(fs.readFileSync(stamp, 'utf8'));
    sameSettings = !force && JSON.stringify(last) === JSON.stringify(settings);
  } catch {
    /* no stamp: first build */
  }
  const ok = run(
    bin('cmake-js'),
    [sameSettings ? 'build' : 'rebuild', '--out', 'build-torch', '--parallel', jobs, '--log-level', 'warn'],
    {
      CMAKE_BUILD_PARALLEL_LEVEL: jobs,
    },
  );
  if (!ok)
    log('torch addon failed to build; see the cmake output above. LIBTORCH=' + (process.env.LIBTORCH || '(unset)'));
  else writeStamp('build-torch/crpo-build.json', { ...settings, newestSource: sourcesAtStart });
  return ok;
}

let ok = true;
if (!only || only === 'core') ok = buildCore() && ok;
if (!only || only === 'torch') ok = buildTorch() && ok;
process.exit(ok ? 0 : 1);
