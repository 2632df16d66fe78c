/**
 * A minimal reader of MP4/MOV headers (ISO/IEC 14496-12 boxes): size, frame count and frame rate
 * of the first video track, read from the `moov` box without starting a process. It is the fast
 * path of `probeVideo`; ffprobe is its slow twin (tests compare them) and takes over for every file
 * this reader does not understand (other containers, fragmented MP4, unusual layouts). A top-level
 * box that extends past the end of the file marks the file as truncated.
 */
import * as fs from 'fs';

export interface Mp4Header {
  width: number;
  height: number;
  /** Samples (frames) in the track's sample table. */
  frames: number;
  fps: number;
  codec: string;
  /** True when a top-level box is cut off by the end of the file. */
  truncated: boolean;
}

interface Box {
  type: string;
  start: number; // offset of the payload in `buf`
  end: number;
}

function* boxes(buf: Buffer, start: number, end: number): Generator<Box> {
  let off = start;
  while (off + 8 <= end) {
    let size = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    let header = 8;
    if (size === 1) {
      if (off + 16 > end) return;
      size = Number(buf.readBigUInt64BE(off + 8));
      header = 16;
    } else if (size === 0) size = end - off;
    if (size < header || off + size > end) return;
    yield { type, start: off + header, end: off + size };
    off += size;
  }
}

function child(buf: Buffer, parent: Box, type: string): Box | undefined {
  for (const b of boxes(buf, parent.start, parent.end)) if (b.type === type) return b;
  return undefined;
}

function path(buf: Buffer, parent: Box, types: string[]): Box | undefined {
  let cur: Box | undefined = parent;
  for (const t of types) {
    cur = cur && child(buf, cur, t);
    if (!cur) return undefined;
  }
  return cur;
}

const MAX_MOOV = 64 * 1024 * 1024;

/** Sample-entry four-character codes under ffprobe's codec names. */
const CODECS: Record<string, string> = {
  avc1: 'h264',
  avc3: 'h264',
  hvc1: 'hevc',
  hev1: 'hevc',
  mp4v: 'mpeg4',
  av01: 'av1',
  vp09: 'vp9',
  mjpa: 'mjpeg',
  jpeg: 'mjpeg',
};

/** Reads the header of an MP4/MOV file, or returns undefined when it cannot (then use ffprobe). */
export function readMp4Header(file: string): Mp4Header | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const head = Buffer.alloc(16);
    let off = 0;
    let moov: Buffer | undefined;
    let truncated = false;
    let first = true;
    while (off + 8 <= size) {
      fs.readSync(fd, head, 0, 16, off);
      let boxSize = head.readUInt32BE(0);
      const type = head.toString('latin1', 4, 8);
      if (first && type !== 'ftyp' && type !== 'moov' && type !== 'free' && type !== 'wide' && type !== 'mdat')
        return undefined; // not ISO-BMFF
      first = false;
      if (boxSize === 1) boxSize = Number(head.readBigUInt64BE(8));
      else if (boxSize === 0) boxSize = size - off;
      if (boxSize < 8) return undefined;
      if (off + boxSize > size) truncated = true;
      if (type === 'moov') {
        if (boxSize > MAX_MOOV || off + boxSize > size) return undefined;
        moov = Buffer.alloc(boxSize);
        fs.readSync(fd, moov, 0, boxSize, off);
      }
      if (type === 'moof') return undefined; // fragmented: the sample table is not in moov
      off += boxSize;
    }
    if (!moov) return undefined;
    const root: Box = { type: 'moov', start: 8, end: moov.length };
    for (const trak of boxes(moov, root.start, root.end)) {
      if (trak.type !== 'trak') continue;
      const hdlr = path(moov, trak, ['mdia', 'hdlr']);
      if (!hdlr || moov.toString('latin1', hdlr.start + 8, hdlr.start + 12) !== 'vide') continue;
      const mdhd = path(moov, trak, ['mdia', 'mdhd']);
      const stbl = path(moov, trak, ['mdia', 'minf', 'stbl']);
      if (!mdhd || !stbl) return undefined;
      const stsz = child(moov, stbl, 'stsz');
      const stsd = child(moov, stbl, 'stsd');
      if (!stsz || !stsd || stsd.end - stsd.start < 8 + 36) return undefined;
      const frames = moov.readUInt32BE(stsz.start + 8);
      const entry = stsd.start + 8; // after version/flags and entry_count
      const codec = moov.toString('latin1', entry + 4, entry + 8);
      const width = moov.readUInt16BE(entry + 32);
      const height = moov.readUInt16BE(entry + 34);
      const v1 = moov.readUInt8(mdhd.start) === 1;
      const timescale = moov.readUInt32BE(mdhd.start + (v1 ? 20 : 12));
      const duration = v1 ? Number(moov.readBigUInt64BE(mdhd.start + 24)) : moov.readUInt32BE(mdhd.start + 16);
      if (!frames || !width || !height) return undefined;
      const fps = timescale && duration ? (frames * timescale) / duration : NaN;
      return { width, height, frames, fps, codec: CODECS[codec] ?? codec.trim(), truncated };
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}
