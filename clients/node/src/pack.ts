/**
 * Packing a skill folder into a `.tar.gz`, deterministically: the same files always
 * give the same bytes, so the same folder always gives the same sha256 (and a
 * second install of an unchanged folder is the server's no-op "same version, same
 * digest"). Entries are sorted, times are fixed, owners are 0, modes are 0644 or
 * 0755 (only the exec bit is kept); `.git`, `__pycache__` and `.DS_Store` are left
 * out. Files are streamed into the archive, never read whole.
 */

import { createReadStream, createWriteStream } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import * as path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";

/** Names never packed, wherever they are. */
export const EXCLUDED_NAMES: ReadonlySet<string> = new Set([".git", "__pycache__", ".DS_Store"]);

/** 2026-01-01T00:00:00Z, the mtime of every entry. */
const FIXED_MTIME = 1_767_225_600;
const BLOCK = 512;

interface Entry {
  /** Path inside the archive, `/`-separated. */
  name: string;
  /** Path on disk. */
  file: string;
  size: number;
  executable: boolean;
}

/** What `packFolder` wrote. */
export interface Packed {
  /** The archive's path. */
  path: string;
  /** Files packed, in archive order. */
  files: string[];
}

async function collect(root: string, relative: string, out: Entry[]): Promise<void> {
  const dir = path.join(root, relative);
  const names = (await readdir(dir)).filter((n) => !EXCLUDED_NAMES.has(n)).sort();
  for (const name of names) {
    const rel = relative ? `${relative}/${name}` : name;
    const file = path.join(dir, name);
    const info = await lstat(file);
    if (info.isDirectory()) {
      await collect(root, rel, out);
    } else if (info.isFile()) {
      out.push({ name: rel, file, size: info.size, executable: (info.mode & 0o111) !== 0 });
    } else {
      // The server refuses links and special files (LINK_ENTRY, SPECIAL_FILE); say so here.
      throw new Error(`${file}: only regular files and directories can be packed`);
    }
  }
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, "0")}\0`;
}

/** A ustar header; long names use the 155-byte prefix field. */
function header(entry: Entry): Buffer {
  const block = Buffer.alloc(BLOCK);
  let name = entry.name;
  let prefix = "";
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", name.length - 1);
    prefix = cut > 0 ? name.slice(0, cut) : "";
    name = cut > 0 ? name.slice(cut + 1) : name;
    if (!prefix || Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) {
      throw new Error(`${entry.name}: path too long for a tar archive`);
    }
  }
  block.write(name, 0, 100, "utf8");
  block.write(octal(entry.executable ? 0o755 : 0o644, 8), 100);
  block.write(octal(0, 8), 108);
  block.write(octal(0, 8), 116);
  block.write(octal(entry.size, 12), 124);
  block.write(octal(FIXED_MTIME, 12), 136);
  block.write(" ".repeat(8), 148); // the checksum counts its own field as spaces
  block.write("0", 156);
  block.write("ustar\0", 257);
  block.write("00", 263);
  block.write(prefix, 345, 155, "utf8");
  let sum = 0;
  for (const byte of block) {
    sum += byte;
  }
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return block;
}

async function* tarStream(entries: Entry[]): AsyncGenerator<Buffer> {
  for (const entry of entries) {
    yield header(entry);
    let written = 0;
    for await (const piece of createReadStream(entry.file, { highWaterMark: 1 << 20 })) {
      const buffer = piece as Buffer;
      written += buffer.length;
      yield buffer;
    }
    if (written !== entry.size) {
      throw new Error(`${entry.file} changed while it was being packed`);
    }
    yield Buffer.alloc((BLOCK - (entry.size % BLOCK)) % BLOCK);
  }
  yield Buffer.alloc(2 * BLOCK);
}

/** Pack the skill folder `dir` into the `.tar.gz` at `out`. */
export async function packFolder(dir: string, out: string): Promise<Packed> {
  const entries: Entry[] = [];
  await collect(dir, "", entries);
  if (!entries.some((e) => e.name === "SKILL.md")) {
    throw new Error(`${dir} has no SKILL.md at its top`);
  }
  // gzip's header carries no name and mtime 0 here, so the bytes depend on the files only.
  await pipeline(tarStream(entries), createGzip({ level: 9 }), createWriteStream(out));
  return { path: out, files: entries.map((e) => e.name) };
}
