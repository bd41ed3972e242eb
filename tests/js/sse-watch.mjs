// sse-watch.mjs - reads one server-sent event stream with a real WHATWG
// EventSource (npm `eventsource`), as a browser would, for the tests.
//
//   node sse-watch.mjs URL [--last-event-id ID] [--max-events N]
//                          [--until EVENTNAME] [--timeout-ms T]
//
// Prints one JSON line per event, {"type", "id", "data"} (data parsed as
// JSON, or the raw string when it is not JSON), on stdout. Exits 0 once the
// --until event (default "end") or the N-th event came, closing the source
// first; exits 1 on timeout (default 30000 ms) or when the source fails for
// good (an HTTP error, a wrong content type), with the reason on stderr.
// Reconnects after a dropped connection are the package's own (with
// Last-Event-ID), bounded by the timeout.
import { EventSource } from 'eventsource';

const TYPES = ['snapshot', 'progress', 'image', 'preview', 'cancel', 'stopped', 'end',
    'created', 'started', 'message'];

function usage(msg) {
    if (msg)
        process.stderr.write(`sse-watch: ${msg}\n`);
    process.stderr.write('usage: node sse-watch.mjs URL [--last-event-id ID] [--max-events N]'
        + ' [--until EVENTNAME] [--timeout-ms T]\n');
    process.exit(2);
}

const opts = { url: null, lastEventId: null, maxEvents: 0, until: 'end', timeoutMs: 30000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    if (a === '--last-event-id')
        opts.lastEventId = value();
    else if (a === '--max-events')
        opts.maxEvents = Number.parseInt(value(), 10);
    else if (a === '--until')
        opts.until = value();
    else if (a === '--timeout-ms')
        opts.timeoutMs = Number.parseInt(value(), 10);
    else if (a.startsWith('--'))
        usage(`unknown option ${a}`);
    else if (opts.url === null)
        opts.url = a;
    else
        usage(`unexpected argument ${a}`);
}
if (!opts.url)
    usage('no URL');
if (!Number.isFinite(opts.maxEvents) || opts.maxEvents < 0)
    usage('bad --max-events');
if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0)
    usage('bad --timeout-ms');

let source = null;
let count = 0;
let done = false;

// Closing the source stops its reconnects; the timer must go too, or node
// would stay up until it fires.
function finish(code, message) {
    if (done)
        return;
    done = true;
    clearTimeout(timer);
    if (source)
        source.close();
    if (message)
        process.stderr.write(`sse-watch: ${message}\n`);
    // Let stdout drain (a pipe is asynchronous) before exiting.
    process.stdout.write('', () => process.exit(code));
}

const timer = setTimeout(
    () => finish(1, `timeout after ${opts.timeoutMs} ms (${count} events)`), opts.timeoutMs);

// The first request carries Last-Event-ID when asked; a reconnect gets the
// package's own header (the last id it saw), which init.headers already has.
function fetchWithId(input, init) {
    const headers = { ...(init && init.headers) };
    const hasOwn = Object.keys(headers).some(k => k.toLowerCase() === 'last-event-id');
    if (opts.lastEventId !== null && !hasOwn)
        headers['Last-Event-ID'] = opts.lastEventId;
    return fetch(input, { ...init, headers });
}

function onEvent(ev) {
    if (done)
        return;
    let data = ev.data;
    try {
        data = JSON.parse(ev.data);
    } catch {
        // not JSON: keep the string
    }
    process.stdout.write(JSON.stringify({ type: ev.type, id: ev.lastEventId, data }) + '\n');
    count++;
    if (ev.type === opts.until || (opts.maxEvents && count >= opts.maxEvents))
        finish(0);
}

try {
    source = new EventSource(opts.url, { fetch: fetchWithId });
} catch (err) {
    finish(1, `cannot open ${opts.url}: ${err.message}`);
}
if (source) {
    for (const type of TYPES)
        source.addEventListener(type, onEvent);
    source.addEventListener('error', (ev) => {
        // CONNECTING: it will reconnect by itself (the timeout bounds that);
        // CLOSED: it gave up (a non-200 answer, a wrong content type).
        if (source.readyState === EventSource.CLOSED)
            finish(1, `stream failed: ${ev.message || 'closed'}${ev.code ? ` (HTTP ${ev.code})` : ''}`);
    });
}
