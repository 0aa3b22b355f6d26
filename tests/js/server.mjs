// Starts a real `pointstream` binary for one test file: a fresh SQLite
// database and media directory with the demo data, `serve` on a free loopback
// port, the address and development admin token parsed from its banner.
//
// Environment:
//   POINTSTREAM_BIN   the binary (default $CARGO_TARGET_DIR/debug/pointstream,
//                     CARGO_TARGET_DIR defaulting to $HOME/.cache/pointstream/target)
//   POINTSTREAM_JS_OUT  where logs and screenshots go (default tests/js/out)

import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, createWriteStream, readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, before, after } from 'node:test';

const here = dirname(fileURLToPath(import.meta.url));

/** The repository root (tests/js/../..). */
export const repoRoot = join(here, '..', '..');

/** Where a test file's logs and screenshots go. */
export function outDir(name) {
  const dir = join(process.env.POINTSTREAM_JS_OUT || join(here, 'out'), name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The binary under test, or a loud error naming what was looked for. */
export function binary() {
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'pointstream', 'target');
  const bin = process.env.POINTSTREAM_BIN || join(target, 'debug', 'pointstream');
  if (!existsSync(bin)) {
    throw new Error(
      `the pointstream binary is missing at ${bin}: build it with ` +
        '`CARGO_TARGET_DIR=$HOME/.cache/pointstream/target cargo build --bin pointstream` ' +
        'or set POINTSTREAM_BIN',
    );
  }
  return bin;
}

/** The environment a child runs with: ours less any pointstream settings (the tests pass their own). */
function childEnv(extra) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('POINTSTREAM_') || key === 'REDIS_URL') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function run(bin, args, env, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`\`pointstream ${args.join(' ')}\` failed: ${err.message}\n--- stderr ---\n${stderr}`));
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

/** Whether `data.stores` lists the demo's cafe and bakery (the demo may add more stores). */
export function hasDemoStores(data) {
  const ids = (data?.stores ?? []).map((s) => s.id);
  return ids.includes('cafe') && ids.includes('bakery');
}

/** `text` cut to `max` characters, saying how much was left out. */
export function clip(text, max = 400) {
  text = String(text);
  return text.length > max ? `${text.slice(0, max)}… (${text.length - max} more characters)` : text;
}

/**
 * Polls `check` (sync or async) until it returns something other than
 * undefined/false, or throws at the deadline with the last error it saw.
 */
export async function waitFor(check, { timeout = 10_000, interval = 50, what = 'the condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.stack || last}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/**
 * A promise and its resolve/reject, with `wait(ms, what)` giving up with a
 * clear error at a deadline.
 */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A rejection nobody waits for any more (the test ended) is not a crash.
  promise.catch(() => {});
  const wait = (ms, what) => {
    let timer;
    return Promise.race([
      promise,
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]).finally(() => clearTimeout(timer));
  };
  return { promise, resolve, reject, wait };
}

/**
 * Calls `trigger(attempt)` until `received` resolves or the deadline passes:
 * a subscription's server side may be registered a moment after the client
 * sent it, so an event caused too early is simply caused again.
 */
export async function untilReceived(trigger, received, { timeout = 30_000, every = 1_000, what = 'the update' } = {}) {
  const deadline = Date.now() + timeout;
  let done = false;
  let value;
  received.then(
    (v) => {
      done = true;
      value = v;
    },
    () => {
      done = true;
    },
  );
  for (let attempt = 0; ; attempt++) {
    await trigger(attempt);
    const until = Math.min(Date.now() + every, deadline);
    while (!done && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    if (done) return received.then(() => value);
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms (${attempt + 1} triggers) waiting for ${what}`);
  }
}

let started = 0;

/**
 * Starts pointstream for the test file `name`: `demo`, then `serve` on
 * 127.0.0.1:0. `args` are extra arguments of `serve`, `env` extra variables
 * of every command. Returns the running server.
 */
export async function startServer(name, { args = [], env = {} } = {}) {
  const bin = binary();
  const dir = outDir(name);
  const data = mkdtempSync(join(tmpdir(), `pointstream-js-${name}-`));
  const global = [
    '--database-url',
    `sqlite://${data}/db.sqlite`,
    '--media-dir',
    join(data, 'media'),
    '--digest-dir',
    join(data, 'digests'),
  ];
  const environment = childEnv({ RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1', ...env });
  const logPath = join(dir, `server-${++started}.log`);
  const log = createWriteStream(logPath);

  const demo = await run(bin, [...global, 'demo'], { ...environment, RUST_LOG: 'warn' });
  log.write(`--- pointstream demo ---\n${demo.stdout}${demo.stderr}\n--- pointstream serve ---\n`);

  const child = spawn(bin, [...global, '--listen', '127.0.0.1:0', ...args, 'serve'], {
    env: environment,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let exited = null;
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
    log.write(chunk);
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-8192);
    log.write(chunk);
  });
  // 'close': the process has exited and its output has all been read.
  const exit = new Promise((resolve) => child.on('close', (code, signal) => resolve((exited = { code, signal }))));
  // Never outlive the test file, however it ends.
  const orphan = () => child.kill('SIGKILL');
  process.once('exit', orphan);

  let printed = 0;
  const readLog = () => {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };

  const server = {
    name,
    bin,
    dir,
    data,
    logPath,
    child,
    /** Mints a token with `pointstream token`: on the server's secret, or on `secret`. */
    async token(role, { member, store, hours, secret } = {}) {
      const args = ['--role', role];
      if (member) args.push('--member', member);
      if (store) args.push('--store', store);
      if (hours) args.push('--hours', String(hours));
      const signing = secret ? ['--jwt-secret', secret] : [];
      const { stdout: out } = await run(bin, [...global, ...signing, 'token', ...args], environment);
      const token = out.trim().split('\n').pop().trim();
      if (!token) throw new Error(`\`pointstream token ${args.join(' ')}\` printed nothing`);
      return token;
    },
    /** POSTs a GraphQL request; returns { status, headers, body } with body parsed when JSON. */
    async post(query, { variables, token, operationName, headers = {} } = {}) {
      const response = await fetch(server.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...headers,
        },
        body: JSON.stringify({ query, variables, operationName }),
      });
      const text = await response.text();
      let body = text;
      try {
        body = JSON.parse(text);
      } catch {}
      return { status: response.status, headers: response.headers, body };
    },
    /** POSTs and insists on data without errors; returns the data. */
    async query(query, options = {}) {
      const { status, body } = await server.post(query, options);
      if (status !== 200 || typeof body !== 'object' || body.errors || !body.data) {
        throw new Error(`${query}\n→ HTTP ${status}: ${clip(typeof body === 'string' ? body : JSON.stringify(body), 2000)}`);
      }
      return body.data;
    },
    /** Earns points for `member` at the cafe with the admin token (a fresh purchase each call). */
    async earn(member, ref, amount = 2500) {
      // Literals, not variables: the argument types may be Int or Long.
      const data = await server.query(
        `mutation { earnPoints(member: ${JSON.stringify(member)}, store: "cafe", purchaseRef: ${JSON.stringify(ref)},
           amount: ${Number(amount)}, idempotencyKey: ${JSON.stringify(ref)}) { position balance { balance } } }`,
        { token: server.adminToken },
      );
      return data.earnPoints;
    },
    /** The server's log so far. */
    log: readLog,
    /** Kills the server and removes its data. */
    async stop() {
      if (!exited) {
        child.kill('SIGKILL');
        await exit;
      }
      process.removeListener('exit', orphan);
      log.end();
      rmSync(data, { recursive: true, force: true });
    },
    /** Prints the log to stderr: all of it (up to its last 200 lines) the first time, then what was added since. */
    printLog(why) {
      const text = readLog().replace(/\x1b\[[0-9;]*m/g, '');
      const fresh = text.slice(printed);
      const lines = fresh.split('\n');
      const tail = lines.length > 200 ? ['…', ...lines.slice(-200)].join('\n') : fresh;
      const since = printed ? ', since the part printed above' : '';
      printed = text.length;
      if (!fresh.trim()) {
        process.stderr.write(`\n--- ${why}: nothing new in pointstream's log (${logPath}) ---\n`);
        return;
      }
      process.stderr.write(`\n--- ${why}: pointstream's log${since} (${logPath}) ---\n${tail}\n--- end of log ---\n`);
    },
  };

  try {
    const banner = await Promise.race([
      waitFor(
        () => {
          const address = /pointstream is listening: GraphiQL at (http:\/\/\S+\/graphql)/.exec(stdout);
          const token = /development admin token: (\S+)/.exec(stdout);
          return address && token ? { url: address[1], token: token[1] } : undefined;
        },
        { timeout: 30_000, interval: 20, what: 'the banner of `pointstream serve` (address and development admin token)' },
      ),
      exit.then((how) => {
        const last = stderr.replace(/\x1b\[[0-9;]*m/g, '').trim().split('\n').slice(-5).join('\n');
        throw new Error(`\`pointstream serve\` exited early (${JSON.stringify(how)}); its stderr ends:\n${last}`);
      }),
    ]);
    server.url = banner.url;
    server.origin = new URL(banner.url).origin;
    server.wsUrl = `${server.origin.replace(/^http/, 'ws')}/graphql/ws`;
    server.adminToken = banner.token;
  } catch (err) {
    server.printLog('pointstream did not start');
    await server.stop();
    throw err;
  }
  return server;
}

/**
 * One test file's server and tests: the server starts before the first
 * test and is killed after the last. `suite.test(title, fn)` runs
 * `fn(t, server)` within `timeout` ms (60 s at most); when it fails or times
 * out, the server's log is printed and the suite's failure handlers run
 * (screenshots), then the failure is passed on.
 */
export function suite(name, options = {}) {
  const handlers = [];
  const ctx = {
    server: undefined,
    onFailure(handler) {
      handlers.push(handler);
    },
    test(title, fn, { timeout = 50_000 } = {}) {
      test(title, { timeout: Math.min(timeout + 5_000, 60_000) }, async (t) => {
        let timer;
        try {
          if (!ctx.server) throw new Error('pointstream did not start (see the hook failure above)');
          await Promise.race([
            fn(t, ctx.server),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`"${title}" did not finish within ${timeout} ms`)), timeout);
            }),
          ]);
        } catch (err) {
          for (const handler of handlers) {
            try {
              await handler(title);
            } catch (inner) {
              process.stderr.write(`a failure handler failed too: ${inner.stack || inner}\n`);
            }
          }
          ctx.server?.printLog(`"${title}" failed`);
          throw err;
        } finally {
          clearTimeout(timer);
        }
      });
    },
  };
  before(async () => {
    ctx.server = await startServer(name, typeof options === 'function' ? await options() : options);
  }, { timeout: 60_000 });
  after(async () => {
    await ctx.server?.stop();
  });
  return ctx;
}

/** Node's fetch, recording each request (URL, method, body) and its answer. */
export function recordingFetch() {
  const requests = [];
  const wrapped = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? String(input) : input.url);
    const entry = {
      method: (init.method || 'GET').toUpperCase(),
      url,
      headers: Object.fromEntries(new Headers(init.headers || {}).entries()),
      body: typeof init.body === 'string' ? JSON.parse(init.body) : init.body,
    };
    requests.push(entry);
    const response = await fetch(input, init);
    entry.status = response.status;
    entry.contentType = response.headers.get('content-type');
    entry.answer = await response.clone().text();
    return response;
  };
  return { requests, fetch: wrapped };
}
