/**
 * The CUDA kernels cannot run on a machine without a GPU, but they must always compile: every
 * native/kernels/cuda/*.cu is compiled with nvcc when nvcc is installed (skipped, with the
 * reason, when it is not). Their results are compared with the CPU kernels on CUDA machines by
 * the same numerics tests (backend 'torch', device 'cuda').
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { skipIf } from '../helpers/skip';

const root = path.resolve(__dirname, '../..');
const cudaDir = path.join(root, 'native/kernels/cuda');
const nvcc = ['nvcc', '/usr/local/cuda/bin/nvcc'].find((p) => spawnSync(p, ['--version']).status === 0);
const sources = fs.readdirSync(cudaDir).filter((f) => f.endsWith('.cu'));

skipIf(!nvcc && 'nvcc is not installed').describe('CUDA kernels', () => {
  it.each(sources)('%s compiles with nvcc', (file) => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-nvcc-')), file + '.o');
    const r = spawnSync(nvcc!, ['-std=c++17', '-c', path.join(cudaDir, file), '-o', out], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`nvcc failed on ${file}:\n${r.stderr}`);
    expect(fs.statSync(out).size).toBeGreaterThan(0);
  });
});
