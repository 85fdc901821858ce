#!/usr/bin/env node
// Builds the web app into web/dist, which build.rs embeds into the binary:
//
//   dist/index.html             the single page (served at / and /r/<room>)
//   dist/assets/app-<hash>.js   the app with livekit-client, bundled and minified by esbuild
//   dist/assets/app-<hash>.css
//   dist/assets/e2ee-worker-<hash>.js   livekit-client's E2EE worker (livekit-client/e2ee-worker),
//                               a classic worker script the app starts for encrypted meetings
//   dist/sw.js                  service worker for the static shell (never caches API calls)
//   dist/manifest.webmanifest, dist/icon.svg, dist/icon-192.png, dist/icon-512.png
//
// Files are rewritten only when their bytes change and stale files are removed, so running the
// build again leaves dist (and therefore cargo's view of it) untouched. Fails when the gzipped
// total passes the budget (400 KB, issue 4).
//
//   node build.mjs            (npm run build type-checks first)

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'dist');
const BUDGET_GZIP = 400 * 1024;

/** @type {Map<string, Buffer>} dist-relative path → bytes */
const out = new Map();

// ---------------------------------------------------------------------------------------------
// livekit-client's E2EE worker: its own file (a worker cannot be inlined under the page's CSP,
// which allows workers from 'self' only), bundled as a classic script (IIFE) so every browser
// with E2EE support can start it with `new Worker(url)`. The app learns its hashed name below.

const worker = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { 'e2ee-worker': 'livekit-client/e2ee-worker' },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020', 'chrome90', 'firefox90', 'safari15'],
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  write: false,
  legalComments: 'none',
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
});
let workerJs;
for (const f of worker.outputFiles) {
  const rel = path.relative(dist, f.path).split(path.sep).join('/');
  out.set(rel, Buffer.from(f.contents));
  if (rel.endsWith('.js')) workerJs = rel;
}
if (!workerJs) throw new Error('esbuild made no E2EE worker');

// ---------------------------------------------------------------------------------------------
// The app: TypeScript + CSS, livekit-client bundled in.

const app = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.ts' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome90', 'firefox90', 'safari15'],
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  write: false,
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"', E2EE_WORKER_URL: JSON.stringify(`/${workerJs}`) },
});
let appJs;
let appCss;
for (const f of app.outputFiles) {
  const rel = path.relative(dist, f.path).split(path.sep).join('/');
  out.set(rel, Buffer.from(f.contents));
  if (rel.endsWith('.js')) appJs = rel;
  if (rel.endsWith('.css')) appCss = rel;
}
if (!appJs || !appCss) throw new Error(`esbuild made no app .js or .css: ${[...out.keys()].join(', ')}`);

// ---------------------------------------------------------------------------------------------
// The page, the manifest and the icons.

const html = fs
  .readFileSync(path.join(here, 'src/index.html'), 'utf8')
  .replaceAll('%APP_JS%', `/${appJs}`)
  .replaceAll('%APP_CSS%', `/${appCss}`);
out.set('index.html', Buffer.from(html));

for (const name of fs.readdirSync(path.join(here, 'static'))) {
  out.set(name, fs.readFileSync(path.join(here, 'static', name)));
}
out.set('icon-192.png', iconPng(192));
out.set('icon-512.png', iconPng(512));

// ---------------------------------------------------------------------------------------------
// The service worker: precaches the shell listed here; its version changes with the shell.

const shell = ['/', ...[...out.keys()].filter((k) => k !== 'index.html').map((k) => `/${k}`)].sort();
const version = crypto.createHash('sha256');
for (const k of [...out.keys()].sort()) version.update(k).update(out.get(k));
const sw = await esbuild.build({
  absWorkingDir: here,
  entryPoints: ['src/sw/sw.ts'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  write: false,
  logLevel: 'warning',
  define: {
    SHELL_FILES: JSON.stringify(shell),
    SHELL_VERSION: JSON.stringify(version.digest('hex').slice(0, 12)),
  },
});
out.set('sw.js', Buffer.from(sw.outputFiles[0].contents));

// ---------------------------------------------------------------------------------------------
// Write what changed, remove what is gone, report sizes.

function listFiles(dir, prefix = '') {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    return e.isDirectory() ? listFiles(path.join(dir, e.name), rel) : [rel];
  });
}

let written = 0;
for (const [rel, bytes] of out) {
  const file = path.join(dist, rel);
  if (fs.existsSync(file) && fs.readFileSync(file).equals(bytes)) continue;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, bytes);
  written += 1;
}
let removed = 0;
for (const rel of listFiles(dist)) {
  if (!out.has(rel)) {
    fs.rmSync(path.join(dist, rel));
    removed += 1;
  }
}

let total = 0;
let totalGz = 0;
const rows = [];
for (const rel of [...out.keys()].sort()) {
  const bytes = out.get(rel);
  const gz = zlib.gzipSync(bytes, { level: 9 }).length;
  total += bytes.length;
  totalGz += gz;
  rows.push(`  ${rel.padEnd(34)} ${kb(bytes.length).padStart(9)} ${kb(gz).padStart(9)} gzipped`);
}
console.log(`web: dist/ (${written} written, ${removed} removed)\n${rows.join('\n')}`);
console.log(`web: total ${kb(total)}, ${kb(totalGz)} gzipped (budget ${kb(BUDGET_GZIP)})`);
if (totalGz > BUDGET_GZIP) {
  console.error(`web: the bundle is over its budget of ${kb(BUDGET_GZIP)} gzipped`);
  process.exit(1);
}

function kb(n) {
  return `${(n / 1024).toFixed(1)} KB`;
}

// ---------------------------------------------------------------------------------------------
// Icons: a speech bubble on blue, drawn here (4×4 supersampling) and encoded as PNG, so no
// binary image sits in the repository. Full-bleed background: usable as a maskable icon.

function iconPng(size) {
  const s = 4;
  const rgba = Buffer.alloc(size * size * 4);
  const blue = [37, 99, 235];
  const white = [255, 255, 255];
  // In units of the icon (0..1): a rounded rectangle and a tail, inside the maskable safe zone.
  const inBubble = (x, y) => {
    const [l, t, r, b, rad] = [0.24, 0.27, 0.76, 0.63, 0.09];
    const cx = Math.min(Math.max(x, l + rad), r - rad);
    const cy = Math.min(Math.max(y, t + rad), b - rad);
    if ((x - cx) ** 2 + (y - cy) ** 2 <= rad * rad) return true;
    // tail: triangle (0.34,0.62) (0.46,0.62) (0.32,0.76)
    const [ax, ay, bx, by, qx, qy] = [0.34, 0.6, 0.47, 0.6, 0.31, 0.76];
    const d = (x1, y1, x2, y2) => (x - x2) * (y1 - y2) - (x1 - x2) * (y - y2);
    const d1 = d(ax, ay, bx, by);
    const d2 = d(bx, by, qx, qy);
    const d3 = d(qx, qy, ax, ay);
    return !((d1 < 0 || d2 < 0 || d3 < 0) && (d1 > 0 || d2 > 0 || d3 > 0));
  };
  const inDot = (x, y) => [0.38, 0.5, 0.62].some((cx) => (x - cx) ** 2 + (y - 0.45) ** 2 <= 0.045 ** 2);
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let cover = 0;
      for (let sy = 0; sy < s; sy++) {
        for (let sx = 0; sx < s; sx++) {
          const x = (px + (sx + 0.5) / s) / size;
          const y = (py + (sy + 0.5) / s) / size;
          if (inBubble(x, y) && !inDot(x, y)) cover += 1;
        }
      }
      const a = cover / (s * s);
      const i = (py * size + px) * 4;
      for (let c = 0; c < 3; c++) rgba[i + c] = Math.round(blue[c] * (1 - a) + white[c] * a);
      rgba[i + 3] = 255;
    }
  }
  const raw = Buffer.alloc((size * 4 + 1) * size);
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** CRC-32 (PNG chunks); zlib.crc32 is only in newer Node 20 releases. */
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}
