#!/usr/bin/env node
/**
 * Writes the data of the vision-stem probe (docs/model.md, "Levers, fourth round"): static
 * synthetic clips that ask the object's shape, as raw uint8 [N, 8, 32, 32, 3] frames and one label
 * byte per clip (0 square, 1 circle, 2 triangle, 3 cross), a train and a test file pair.
 *
 *   npm run build && node scripts/vision-probe/make-clips.js <out-dir> [train-clips=16000] [test-clips=1000]
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { synthesizePair } = require('../../dist/synth');
const { SHAPES } = require('../../dist/data/scene');

function write(dir, split, clips, seed) {
  const clipBytes = 8 * 32 * 32 * 3;
  const frames = Buffer.alloc(clips * clipBytes);
  const labels = Buffer.alloc(clips);
  // Static clips cycle colour, shape, count by index: index % 3 === 1 asks the shape.
  for (let k = 0, index = 1; k < clips; k++, index += 3) {
    const [original] = synthesizePair({ split, pairs: 1, seed, colour: 'independent' }, 'static', index);
    frames.set(original.frames, k * clipBytes);
    labels[k] = SHAPES.indexOf(original.record.video.scene.objects[0].shape);
  }
  fs.writeFileSync(path.join(dir, `${split}.frames`), frames);
  fs.writeFileSync(path.join(dir, `${split}.labels`), labels);
}

const [dir, train = '16000', test = '1000'] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node scripts/vision-probe/make-clips.js <out-dir> [train-clips] [test-clips]');
  process.exit(2);
}
fs.mkdirSync(dir, { recursive: true });
write(dir, 'train', Number(train), 1);
write(dir, 'test', Number(test), 7);
console.log(`wrote ${train} train and ${test} test shape clips to ${dir}`);
