'use strict';
// One JavaScript context of the E2B code interpreter: cells run one after another in one process, the way
// Node's own REPL evaluates them (top-level await, `let`/`const`/functions kept between cells, the value of
// the last expression). Requests and events are NDJSON lines on the socket whose fd is argv[2]; what the
// user's code writes to stdout/stderr travels as events too, tagged with the cell it belongs to.
const { spawnSync } = require('child_process');
const domain = require('domain');
const net = require('net');
const repl = require('repl');
const util = require('util');
const { PassThrough } = require('stream');

const channel = new net.Socket({ fd: Number(process.argv[2]), readable: true, writable: true });
const typescript = process.argv[3] === 'ts';
let cell = null; // the id of the cell running now

function emit(event) {
  channel.write(JSON.stringify({ cell, ...event }) + '\n');
}

for (const name of ['stdout', 'stderr']) {
  process[name].write = function (chunk, encoding, callback) {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    emit({ type: name, text });
    if (typeof encoding === 'function') encoding();
    else if (typeof callback === 'function') callback();
    return true;
  };
}

// The REPL itself reads and writes nothing: it is only here for its evaluator. It runs a cell inside its
// domain and hands what the cell throws (or a rejected top-level await) to the domain, not to the eval's
// callback, so the domain is ours and its error ends the running cell.
const cells = domain.create();
const server = repl.start({
  input: new PassThrough(), output: new PassThrough(), prompt: '', terminal: false,
  useGlobal: true, breakEvalOnSigint: true, ignoreUndefined: true, domain: cells,
});
cells.removeAllListeners('error');
cells.on('error', (err) => (running ? finish(cell, err) : emit(errorEvent(err))));

// The REPL's own frames (node:vm, node:repl, ...) say nothing about the user's code.
function userStack(stack) {
  return stack.split('\n').filter((l) => !/^\s+at .*\(?node:[a-z_/]+:\d+:\d+\)?$/.test(l)
    && !l.includes(__filename)).join('\n');
}

function errorEvent(err) {
  if (err instanceof Error) {
    const stack = err.stack ? userStack(String(err.stack)) : String(err);
    return { type: 'error', name: err.name || 'Error', value: err.message || '', traceback: stack };
  }
  return { type: 'error', name: 'Error', value: util.inspect(err), traceback: util.inspect(err) };
}

function resultEvent(value) {
  const display = value !== null && (typeof value === 'object' || typeof value === 'function')
    ? value[Symbol.for('Jupyter.display')] : undefined;
  if (typeof display === 'function') {
    try {
      return { type: 'display', data: display.call(value) };
    } catch (err) {
      return errorEvent(err);
    }
  }
  return { type: 'display', data: { 'text/plain': util.inspect(value) } };
}

process.on('uncaughtException', (err) => emit(errorEvent(err)));
process.on('unhandledRejection', (err) => emit(errorEvent(err)));

// SIGINT is how the agent interrupts a cell. While a cell's synchronous part runs, the REPL's watchdog
// breaks it (that only works with no SIGINT listener installed); afterwards, a cell still awaiting is
// ended here with the same error, its promise left to settle unobserved, and the process lives on.
function onSigint() {
  if (!running) return;
  const err = new Error('Script execution was interrupted by `SIGINT`');
  err.name = 'KeyboardInterrupt';
  err.stack = `${err.name}: ${err.message}`;
  finish(cell, err);
}
process.on('SIGINT', onSigint);

// A TypeScript cell loses its types (esbuild, the template's `esbuild` package) and runs as JavaScript in
// the same context; types are not checked. Without esbuild, cells run as they are.
function stripTypes(code) {
  const out = spawnSync('esbuild', ['--loader=ts', '--log-level=error', '--color=false'],
    { input: code, encoding: 'utf8' });
  if (out.error) {
    if (out.error.code === 'ENOENT') return code;
    throw out.error;
  }
  if (out.status === 0) return out.stdout;
  const report = out.stderr.trim();
  const where = /<stdin>:(\d+):(\d+)/.exec(report);
  const err = new SyntaxError(report.split('\n')[0].replace(/^\S*\s*\[ERROR\]\s*/, '')
    + (where ? ` (${where[1]}:${where[2]})` : ''));
  err.stack = `SyntaxError: ${report.replace(/^\S*\s*\[ERROR\]\s*/, '')}`;
  throw err;
}

// Node's REPL refuses static `import` declarations ("use dynamic import"): a cell's imports become dynamic
// ones, awaited at top level, bound with `var` so a later cell may import the same names again.
const IMPORT = /^([ \t]*)import\s+(?:([\s\S]*?)\s+from\s+)?(['"][^'"\n]+['"])[ \t]*;?/gm;

function bindings(clause) {
  const parts = [];
  const named = /\{([\s\S]*)\}/.exec(clause);
  const rest = clause.replace(/\{[\s\S]*\}/, '').split(',').map((x) => x.trim()).filter(Boolean);
  for (const item of rest) {
    const star = /^\*\s+as\s+([\w$]+)$/.exec(item);
    if (star) return { namespace: star[1], parts };
    parts.push(`default: ${item}`);
  }
  if (named) {
    for (const item of named[1].split(',').map((x) => x.trim()).filter(Boolean)) {
      parts.push(item.replace(/^([\w$]+|'[^']*'|"[^"]*")\s+as\s+([\w$]+)$/, '$1: $2'));
    }
  }
  return { namespace: null, parts };
}

function dynamicImports(code) {
  return code.replace(IMPORT, (whole, indent, clause, source) => {
    if (clause === undefined) return `${indent}await import(${source});`;
    const { namespace, parts } = bindings(clause);
    if (namespace) {
      const extra = parts.length ? `var { ${parts.join(', ')} } = ${namespace};` : '';
      return `${indent}var ${namespace} = await import(${source});${extra}`;
    }
    return `${indent}var { ${parts.join(', ')} } = await import(${source});`;
  });
}

const pending = [];
let running = false;
let saved = {}; // the env vars the running cell overrides, as they were

function next() {
  if (running || pending.length === 0) return;
  running = true;
  const request = pending.shift();
  cell = request.cell;
  saved = {};
  for (const [k, v] of Object.entries(request.env || {})) {
    saved[k] = Object.prototype.hasOwnProperty.call(process.env, k) ? process.env[k] : undefined;
    process.env[k] = v;
  }
  const id = request.cell;
  let code = request.code;
  if (typescript) {
    try {
      code = stripTypes(code);
    } catch (err) {
      finish(id, err);
      return;
    }
  }
  code = dynamicImports(code);
  process.removeListener('SIGINT', onSigint);
  try {
    server.eval(code, server.context, `cell-${id}`, (err, value) => finish(id, err, value));
  } finally {
    process.on('SIGINT', onSigint);
  }
}

function finish(id, err, value) {
  if (!running || id !== cell) return; // an interrupted cell's promise settling later
  if (err instanceof repl.Recoverable) err = err.err; // incomplete input: report its SyntaxError
  if (err) emit(errorEvent(err));
  else if (value !== undefined) emit(resultEvent(value));
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  emit({ type: 'end' });
  cell = null;
  running = false;
  setImmediate(next);
}

let buffered = '';
channel.setEncoding('utf8');
channel.on('data', (data) => {
  buffered += data;
  let nl;
  while ((nl = buffered.indexOf('\n')) >= 0) {
    const raw = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    if (raw.trim()) pending.push(JSON.parse(raw));
  }
  next();
});
channel.on('end', () => process.exit(0));
