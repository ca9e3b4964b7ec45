// lib.js -- what the browser tests share: TAP output, Debian's chromium
// through playwright-core, free ports, child processes that are always
// stopped, waiting for a condition.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const { spawn } = require('child_process');

const ROOT = path.resolve(__dirname, '..', '..');
const OUT = path.join(ROOT, 'build', 'e2e');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A TAP producer: tap.test(name, fn) runs in order; tap.end() prints the plan
// and exits 1 when any test failed. A thrown error is a "not ok" with its
// message as a diagnostic.
function tap() {
  const tests = [];
  const cleanups = [];
  return {
    test(name, fn) { tests.push({ name, fn }); },
    cleanup(fn) { cleanups.push(fn); },
    async run() {
      let n = 0;
      let failed = 0;
      let bail = null;
      for (const t of tests) {
        n += 1;
        if (bail) {
          process.stdout.write(`not ok ${n} - ${t.name}\n# not run: ${bail}\n`);
          failed += 1;
          continue;
        }
        try {
          await t.fn();
          process.stdout.write(`ok ${n} - ${t.name}\n`);
        } catch (e) {
          failed += 1;
          process.stdout.write(`not ok ${n} - ${t.name}\n`);
          process.stdout.write(String((e && e.stack) || e).split('\n').map((l) => `# ${l}`).join('\n') + '\n');
          if (e && e.bail) bail = e.message;
        }
      }
      for (const c of cleanups.reverse()) {
        try { await c(); } catch (e) { process.stdout.write(`# cleanup: ${e.message}\n`); }
      }
      process.stdout.write(`1..${n}\n`);
      process.exit(failed ? 1 : 0);
    },
  };
}

// An error that also fails every later test (the set-up is broken).
function bail(msg) {
  const e = new Error(msg);
  e.bail = true;
  return e;
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Headless Debian chromium, or a bail naming what is missing (never a skip).
async function launch() {
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    throw bail(`playwright-core is not installed (${e.message}): run scripts/browser-deps.sh`);
  }
  if (!fs.existsSync(CHROMIUM)) throw bail(`${CHROMIUM} is missing: run scripts/browser-deps.sh (apt-get install chromium)`);
  // launch() gives the browser a fresh temporary user-data-dir of its own.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Starts a child process (its own process group, so its children stop with
// it); resolves once a line of its stdout matches `ready` (the match is
// returned), rejects when it exits first or after timeoutMs. Its output is
// kept in logFile.
function start(cmd, args, { env, ready, timeoutMs = 60000, logFile }) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = fs.createWriteStream(logFile);
    let buf = '';
    let settled = false;
    const timer = setTimeout(() => settle(new Error(`${cmd} printed nothing matching ${ready} within ${timeoutMs} ms (log ${logFile})`)), timeoutMs);
    function settle(err, m) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err); else resolve({ child, match: m, exited: new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.on('exit', (code, sig) => r(code === null ? sig : code)))) });
    }
    child.stdout.on('data', (d) => {
      log.write(d);
      buf += d.toString();
      const m = buf.match(ready);
      if (m) settle(null, m);
    });
    child.stderr.on('data', (d) => log.write(d));
    child.on('exit', (code) => settle(new Error(`${cmd} ${args.join(' ')} exited with ${code} before it was ready (log ${logFile}):\n${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : ''}`)));
  });
}

// Stops a child started by start(): SIGINT (or sig) to its group, SIGKILL
// after graceMs; resolves its exit code or signal.
async function stop(proc, sig = 'SIGINT', graceMs = 15000) {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return proc ? proc.exited : null;
  try { process.kill(-proc.child.pid, sig); } catch (e) { /* gone */ }
  const timer = setTimeout(() => { try { process.kill(-proc.child.pid, 'SIGKILL'); } catch (e) { /* gone */ } }, graceMs);
  const code = await proc.exited;
  clearTimeout(timer);
  return code;
}

// Polls fn() until it returns a truthy value (returned) or timeoutMs passes
// (throws with what()).
async function until(fn, timeoutMs, what) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? await what() : what}`);
    await sleep(25);
  }
}

function percentile(values, p) {
  const s = values.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

module.exports = { ROOT, OUT, tap, bail, assert, launch, freePort, start, stop, until, sleep, percentile };
