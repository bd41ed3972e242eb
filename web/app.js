// app.js - the page served at / by imagejobs serve (compiled into the
// binary, actors/api/web.c). One module, no framework, nothing from
// elsewhere: the Content-Security-Policy allows this origin only.
//
// It submits jobs, lists them (live from GET /api/events), follows one
// (live from GET /api/jobs/{id}/events?previews=1) and cancels it as the
// seed's ImageGenerationProgress does: a confirm() with the seed's text,
// the button disabled and labelled as cancelling while the request is in
// flight, an alert() when it fails. With --auth required every call carries
// the token kept in localStorage; the streams take it as ?access_token=
// (EventSource cannot send headers) and images are fetched with the header
// and shown as blob: URLs (docs/security.md: no token in other URLs).

const TEXT = {
    en: {
        authTitle: 'API token',
        authLabel: 'This server needs an API token (imagejobs keys create)',
        authSave: 'Use this token',
        authNeeded: 'This server requires an API token. Enter one to continue.',
        authWrong: 'The token was refused by the server',
        authUnreadable: 'The server cannot check tokens right now',
        submitTitle: 'New job',
        prompt: 'Prompt',
        combinations: 'Combinations (seed and style)',
        seed: 'Seed',
        style: 'Style',
        remove: 'Remove',
        addCombo: 'Add a combination',
        images: 'Images per combination',
        imagesTitle: 'Images',
        job: 'Job',
        width: 'Width',
        height: 'Height',
        steps: 'Steps',
        deadline: 'Deadline (seconds, optional)',
        submit: 'Generate',
        jobsTitle: 'Jobs',
        filter: 'Status',
        all: 'all',
        noJobs: 'No jobs yet.',
        generating: 'Generating images...',
        cancelButton: 'Cancel generation',
        cancelling: 'Cancelling...',
        cancelConfirm: 'Cancel the image generation in progress? Images already generated are kept.',
        cancelFailed: 'The cancel request failed.',
        created: 'created',
        started: 'started',
        finished: 'finished',
        cancelRequested: 'cancel requested',
        combination: 'combination',
        image: 'image',
        stoppedAfter: (ms, obs) => `stopped ${ms} ms after the cancel (seen after ${obs} ms)`,
        kept: (n, total) => `Cancelled: ${n} of ${total} images kept.`,
        live: 'live',
        reconnecting: 'reconnecting...',
        networkError: 'The server cannot be reached',
    },
    ko: {
        authTitle: 'API 토큰',
        authLabel: '이 서버는 API 토큰이 필요합니다 (imagejobs keys create)',
        authSave: '토큰 사용',
        authNeeded: '이 서버는 API 토큰이 필요합니다. 토큰을 입력하세요.',
        authWrong: '서버가 토큰을 거부했습니다',
        authUnreadable: '서버가 지금 토큰을 확인할 수 없습니다',
        submitTitle: '새 작업',
        prompt: '프롬프트',
        combinations: '조합 (시드와 스타일)',
        seed: '시드',
        style: '스타일',
        remove: '삭제',
        addCombo: '조합 추가',
        images: '조합당 이미지 수',
        imagesTitle: '이미지',
        job: '작업',
        width: '너비',
        height: '높이',
        steps: '스텝',
        deadline: '마감 (초, 선택)',
        submit: '생성',
        jobsTitle: '작업',
        filter: '상태',
        all: '전체',
        noJobs: '작업이 없습니다.',
        generating: '이미지 생성 중...',
        cancelButton: '생성 취소',
        cancelling: '취소 중...',
        cancelConfirm: '진행 중인 이미지 생성을 취소하시겠습니까?\n이미 생성된 이미지는 유지됩니다.',
        cancelFailed: '취소 요청에 실패했습니다.',
        created: '생성',
        started: '시작',
        finished: '종료',
        cancelRequested: '취소 요청',
        combination: '조합',
        image: '이미지',
        stoppedAfter: (ms, obs) => `취소 후 ${ms} ms 만에 중단 (${obs} ms 만에 감지)`,
        kept: (n, total) => `취소됨: ${total}개 중 ${n}개 이미지 유지.`,
        live: '실시간',
        reconnecting: '다시 연결 중...',
        networkError: '서버에 연결할 수 없습니다',
    },
};

const LANG = (navigator.languages || [navigator.language || 'en'])
    .map((l) => String(l).toLowerCase())
    .find((l) => l.startsWith('ko') || l.startsWith('en'))?.startsWith('ko') ? 'ko' : 'en';
const T = TEXT[LANG];
const TOKEN_KEY = 'imagejobs.token';
const ACTIVE = new Set(['pending', 'processing']);

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
        if (k === 'class')
            e.className = v;
        else if (k === 'text')
            e.textContent = v;
        else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'for')
            e.setAttribute(k, v);
        else
            e[k] = v;
    }
    for (const c of children)
        e.append(c);
    return e;
};

// ------------------------------------------------------------------ API

class AuthError extends Error {}

function token() {
    return localStorage.getItem(TOKEN_KEY) || '';
}

// fetch() of an /api/ path with the token; a 401 shows the token form and
// throws AuthError. Resolves to the Response otherwise.
async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token())
        headers.set('Authorization', `Bearer ${token()}`);
    let res;
    try {
        res = await fetch(path, { ...options, headers });
    } catch (err) {
        setConn(T.networkError);
        throw err;
    }
    if (res.status === 401) {
        let why = '';
        try {
            why = (await res.json()).error || '';
        } catch { /* not JSON: the status says enough */ }
        askToken(token() ? `${T.authWrong}: ${why}` : T.authNeeded);
        throw new AuthError(why);
    }
    return res;
}

async function apiJson(path, options) {
    const res = await api(path, options);
    let body = null;
    try {
        body = await res.json();
    } catch { /* an empty or non-JSON body */ }
    return { res, body };
}

function streamUrl(path) {
    if (!token())
        return path;
    return `${path}${path.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(token())}`;
}

// The full PNG of an attachment, fetched with the token, as a blob: URL
// (kept: an attachment never changes).
const blobs = new Map();
function attachmentUrl(id) {
    if (!blobs.has(id)) {
        blobs.set(id, api(`/api/attachments/${id}`).then(async (res) => {
            if (!res.ok)
                throw new Error(`attachment ${id}: ${res.status}`);
            return URL.createObjectURL(await res.blob());
        }).catch((err) => {
            blobs.delete(id);
            throw err;
        }));
    }
    return blobs.get(id);
}

function setConn(text) {
    $('conn').textContent = text;
}

// ----------------------------------------------------------------- auth

function askToken(message) {
    $('auth').hidden = false;
    $('auth-msg').textContent = message;
    $('app').inert = true;
    $('token').focus();
    closeStreams();
}

function tokenAccepted() {
    $('auth').hidden = true;
    $('auth-msg').textContent = '';
    $('app').inert = false;
}

$('auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (t)
        localStorage.setItem(TOKEN_KEY, t);
    else
        localStorage.removeItem(TOKEN_KEY);
    start();
});

// ---------------------------------------------------------------- times

// ISO 8601 with microseconds ("2026-12-01T11:53:00.128667Z") as µs since
// the epoch: Date keeps milliseconds only, and a stop takes less.
function isoUs(s) {
    if (!s)
        return null;
    const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)$/.exec(s);
    if (!m)
        return Date.parse(s) * 1000;
    const frac = (m[2] || '').padEnd(6, '0').slice(0, 6);
    return Date.parse(m[1] + m[3]) * 1000 + Number(frac);
}

function fmtTime(s) {
    if (!s)
        return '';
    return new Date(isoUs(s) / 1000).toLocaleString(LANG === 'ko' ? 'ko-KR' : 'en-GB');
}

function fmtMs(us) {
    return (us / 1000).toFixed(us < 10000 ? 2 : 1);
}

// ------------------------------------------------------------- the form

function comboRow(seed = '', style = '') {
    const n = $('combos').children.length;
    const seedId = `f-seed-${n}`, styleId = `f-style-${n}`;
    const row = el('div', { class: 'combo-row' },
        el('div', {}, el('label', { for: seedId, text: T.seed }),
            el('input', { id: seedId, type: 'number', inputMode: 'numeric', value: seed, className: 'seed' })),
        el('div', {}, el('label', { for: styleId, text: T.style }),
            el('input', { id: styleId, type: 'text', value: style, className: 'style' })),
        el('button', { type: 'button', className: 'secondary remove', text: T.remove }),
        el('p', { class: 'error', role: 'alert', id: `err-combo-${n}` }));
    row.querySelector('.remove').addEventListener('click', () => {
        if ($('combos').children.length > 1) {
            row.remove();
            $('combos').querySelector('input')?.focus();
        }
    });
    $('combos').append(row);
    return row;
}

function clearErrors() {
    for (const e of document.querySelectorAll('#job-form .error'))
        e.textContent = '';
    for (const e of document.querySelectorAll('#job-form [aria-invalid]'))
        e.removeAttribute('aria-invalid');
}

// Puts the server's message next to the field it names ("width must be
// ...", "combinations[1].seed must be ..."), or under the form.
function showError(message) {
    const m = /^(?:unknown field ")?([a-z_]+)(?:\[(\d+)\](?:\.([a-z_]+))?)?/.exec(message || '');
    let where = $('err-form'), input = null;
    if (m && m[1] === 'combinations' && m[2] !== undefined) {
        const row = $('combos').children[Number(m[2])];
        if (row) {
            where = row.querySelector('.error');
            input = row.querySelector(m[3] === 'style' ? '.style' : '.seed');
        }
    } else if (m && $(`err-${m[1]}`)) {
        where = $(`err-${m[1]}`);
        input = document.querySelector(`#job-form [name="${m[1]}"]`);
    }
    where.textContent = message;
    if (input) {
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', where.id || '');
        input.focus();
    }
}

// A number field as the server should see it: an integer when it reads as
// one, the text otherwise (the server names what is wrong with it).
function numberField(input) {
    const s = input.value.trim();
    if (s === '')
        return undefined;
    return /^-?\d+$/.test(s) ? Number(s) : s;
}

$('add-combo').addEventListener('click', () => comboRow().querySelector('input').focus());

$('job-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    const body = { prompt: $('f-prompt').value };
    body.combinations = [...$('combos').children].map((row) => {
        const c = {};
        const seed = numberField(row.querySelector('.seed'));
        const style = row.querySelector('.style').value;
        if (seed !== undefined)
            c.seed = seed;
        if (style !== '')
            c.style = style;
        return c;
    });
    for (const name of ['images_per_combination', 'width', 'height', 'steps', 'cancel_after_s']) {
        const v = numberField(document.querySelector(`#job-form [name="${name}"]`));
        if (v !== undefined)
            body[name] = v;
    }
    const button = $('submit-job');
    button.disabled = true;
    try {
        const { res, body: out } = await apiJson('/api/jobs', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
        });
        if (res.status !== 201) {
            showError(out?.error || `HTTP ${res.status}`);
            return;
        }
        refreshList();
        openJob(out.job_id);
    } catch (err) {
        if (!(err instanceof AuthError))
            showError(String(err.message || err));
    } finally {
        button.disabled = false;
    }
});

// ------------------------------------------------------------- the list

const listed = new Map(); // job_id -> summary
let listTimer = null;

function renderList() {
    const filter = $('status-filter').value;
    const jobs = [...listed.values()]
        .filter((j) => !filter || j.job_status === filter)
        .sort((a, b) => (isoUs(b.created_at) - isoUs(a.created_at)) || (a.job_id < b.job_id ? 1 : -1));
    const ul = $('job-list');
    // the list is drawn anew on every event: a keyboard user's focus on one
    // of its jobs must survive that, or Enter would land nowhere
    const focused = ul.contains(document.activeElement)
        ? document.activeElement.closest('li')?.dataset.job : null;
    ul.replaceChildren(...jobs.map((j) => {
        const b = el('button', { type: 'button', className: 'link' },
            el('span', { class: 'p', text: j.prompt }),
            el('span', { class: `status ${j.job_status}`, text: j.job_status }),
            el('span', { class: 'm', text: `${j.job_id.slice(0, 8)} · ${fmtTime(j.created_at)}` }),
            el('span', { class: 'm', text: `${j.completed_images} / ${j.total_images}` }));
        b.addEventListener('click', () => openJob(j.job_id));
        return el('li', { class: j.job_id === current?.id ? 'current' : '', 'data-job': j.job_id,
            'data-status': j.job_status }, b);
    }));
    $('jobs-empty').hidden = jobs.length > 0;
    if (focused)
        ul.querySelector(`li[data-job="${focused}"] button`)?.focus();
}

async function refreshList() {
    const filter = $('status-filter').value;
    const { res, body } = await apiJson(`/api/jobs?limit=50${filter ? `&status=${filter}` : ''}`);
    if (!res.ok)
        throw new Error(body?.error || `HTTP ${res.status}`);
    tokenAccepted();
    // the page is the server's (newest first); what the events changed since
    // is applied to it as they come
    listed.clear();
    for (const j of body.jobs)
        listed.set(j.job_id, j);
    renderList();
}

function refreshSoon() {
    clearTimeout(listTimer);
    listTimer = setTimeout(() => refreshList().catch(() => {}), 300);
}

$('status-filter').addEventListener('change', () => refreshList().catch(() => {}));

// Every job's events (no previews): the list follows them.
let allEvents = null;
function openAllEvents() {
    allEvents?.close();
    allEvents = new EventSource(streamUrl('/api/events'));
    allEvents.onopen = () => setConn(T.live);
    allEvents.onerror = () => setConn(T.reconnecting);
    const onEvent = (ev) => {
        const d = JSON.parse(ev.data);
        const j = listed.get(d.job_id);
        if (!j) {
            if (ev.type === 'created' || ev.type === 'started' || ev.type === 'end')
                refreshSoon();
            return;
        }
        if (ev.type === 'started')
            j.job_status = 'processing';
        else if (ev.type === 'image')
            j.completed_images = d.completed_images;
        else if (ev.type === 'cancel')
            j.cancel_requested = true;
        else if (ev.type === 'end') {
            j.job_status = d.job_status;
            j.completed_images = d.completed_images;
            j.finished_at = d.finished_at;
        }
        renderList();
    };
    for (const t of ['created', 'started', 'image', 'cancel', 'stopped', 'end'])
        allEvents.addEventListener(t, onEvent);
}

// ------------------------------------------------------------ one job

let current = null; // { id, doc, source, cancelling, progress: Map }

function closeStreams() {
    allEvents?.close();
    allEvents = null;
    current?.source?.close();
}

function openJob(id) {
    current?.source?.close();
    current = { id, doc: null, source: null, cancelling: false, steps: new Map(), shown: new Set() };
    $('detail').hidden = false;
    $('thumbs').replaceChildren();
    $('combo-list').replaceChildren();
    $('cancel-summary').hidden = true;
    $('job-title').textContent = id;
    $('detail').dataset.job = id;
    renderList();
    const src = new EventSource(streamUrl(`/api/jobs/${id}/events?previews=1`));
    current.source = src;
    const job = current;
    const on = (type, fn) => src.addEventListener(type, (ev) => {
        if (current === job)
            fn(JSON.parse(ev.data));
    });
    on('snapshot', (doc) => {
        job.doc = doc;
        renderJob();
    });
    on('started', (d) => {
        if (job.doc) {
            job.doc.job_status = 'processing';
            job.doc.started_at = d.started_at;
            renderJob();
        }
    });
    on('progress', (d) => {
        job.steps.set(d.combination, d);
        renderCombos();
    });
    on('preview', (d) => {
        const img = document.querySelector(`#combo-list li[data-combination="${d.combination}"] img.preview`);
        if (img)
            img.src = d.data;
    });
    on('image', (d) => {
        if (!job.doc)
            return;
        job.doc.completed_images = d.completed_images;
        if (!job.doc.generated_attach_ids.includes(d.attach_id))
            job.doc.generated_attach_ids.push(d.attach_id);
        const c = job.doc.combinations[d.combination];
        if (c)
            c.completed_images = Math.max(c.completed_images, d.image_index + 1);
        job.steps.delete(d.combination);
        renderJob();
    });
    on('cancel', (d) => {
        if (!job.doc)
            return;
        job.doc.cancel_requested = true;
        job.doc.cancel_requested_at = job.doc.cancel_requested_at || d.cancel_requested_at;
        renderJob();
    });
    on('stopped', (d) => {
        const c = job.doc?.combinations[d.combination];
        if (!c)
            return;
        Object.assign(c, {
            status: d.status, completed_images: d.completed_images,
            cancel_observed_at: d.cancel_observed_at, stopped_at: d.stopped_at, error: d.error,
        });
        job.steps.delete(d.combination);
        renderJob();
    });
    on('end', (d) => {
        src.close(); // the stream ends here; no reconnect
        if (!job.doc)
            return;
        Object.assign(job.doc, {
            job_status: d.job_status, completed_images: d.completed_images,
            generated_attach_ids: d.generated_attach_ids, finished_at: d.finished_at, error: d.error,
        });
        renderJob();
    });
    src.onerror = () => {
        // EventSource reconnects by itself (Last-Event-ID); a stream that
        // cannot be opened at all (404, 401) ends here
        if (src.readyState === EventSource.CLOSED && current === job && !job.doc)
            $('job-title').textContent = `${id}: ?`;
    };
}

function renderJob() {
    const job = current, d = job?.doc;
    if (!d)
        return;
    $('job-title').textContent = `${T.job} · ${d.job_id}`;
    $('job-prompt').textContent = d.prompt;
    const st = $('job-status');
    st.textContent = d.job_status;
    st.className = `status ${d.job_status}`;
    $('detail').dataset.status = d.job_status;
    const times = [[T.created, d.created_at], [T.started, d.started_at],
        [T.cancelRequested, d.cancel_requested_at], [T.finished, d.finished_at]];
    $('job-times').replaceChildren(...times.filter(([, v]) => v).flatMap(([k, v]) =>
        [el('dt', { text: k }), el('dd', { text: fmtTime(v), title: v })]));
    // the seed's bar: completed images of the total
    $('overall-label').textContent = T.generating;
    $('overall-count').textContent = `${d.completed_images} / ${d.total_images}`;
    const pct = d.total_images ? (100 * d.completed_images) / d.total_images : 0;
    $('overall-bar').firstElementChild.style.width = `${pct}%`;
    $('overall-bar').setAttribute('aria-valuenow', String(Math.round(pct)));
    // the seed's button, for pending jobs too (a pending cancel ends the job
    // at once); gone once the server has the cancel: it is never sent twice
    const btn = $('cancel');
    btn.hidden = !ACTIVE.has(d.job_status) || (d.cancel_requested && !job.cancelling);
    btn.disabled = job.cancelling || d.cancel_requested;
    btn.textContent = job.cancelling ? T.cancelling : T.cancelButton;
    renderCombos();
    renderThumbs();
    const sum = $('cancel-summary');
    if (d.job_status === 'user_cancelled') {
        sum.hidden = false;
        sum.textContent = T.kept(d.completed_images, d.total_images);
    } else {
        sum.hidden = true;
    }
    const j = listed.get(d.job_id);
    if (j && (j.job_status !== d.job_status || j.completed_images !== d.completed_images)) {
        j.job_status = d.job_status;
        j.completed_images = d.completed_images;
        renderList();
    }
}

function renderCombos() {
    const job = current, d = job?.doc;
    if (!d)
        return;
    const ul = $('combo-list');
    d.combinations.forEach((c) => {
        let li = ul.querySelector(`li[data-combination="${c.combination}"]`);
        if (!li) {
            li = el('li', { 'data-combination': String(c.combination) },
                el('img', { className: 'preview', alt: '' }),
                el('div', {},
                    el('div', { class: 'head' }, el('span', { class: 'name' }), el('span', { class: 'count' })),
                    el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' },
                        el('div')),
                    el('span', { class: 'muted cstatus' })),
                el('p', { class: 'stop', hidden: true }));
            ul.append(li);
        }
        const per = d.images_per_combination;
        const p = job.steps.get(c.combination);
        const inFlight = p && c.status === 'processing' && p.image_index >= c.completed_images
            ? p.step / p.steps : 0;
        const pct = per ? Math.min(100, (100 * (c.completed_images + inFlight)) / per) : 0;
        li.dataset.status = c.status;
        li.querySelector('.name').textContent =
            `${T.combination} ${c.combination} · seed ${c.seed}${c.style ? ` · ${c.style}` : ''}`;
        li.querySelector('.count').textContent = `${c.completed_images} / ${per}`;
        const bar = li.querySelector('.bar');
        bar.firstElementChild.style.width = `${pct}%`;
        bar.setAttribute('aria-valuenow', String(Math.round(pct)));
        bar.setAttribute('aria-label', `${T.combination} ${c.combination}`);
        li.querySelector('.cstatus').textContent = p && c.status === 'processing'
            ? `${c.status} · ${T.image} ${p.image_index + 1} · step ${p.step}/${p.steps}` : c.status;
        li.querySelector('.preview').alt = `${T.combination} ${c.combination}`;
        // how long the stop took: from the job's cancel to this combination's
        // stop, as its generator timed it (the stopped event)
        const stop = li.querySelector('.stop');
        const asked = isoUs(d.cancel_requested_at), stopped = isoUs(c.stopped_at);
        if (c.status === 'cancelled' && asked && stopped) {
            const observed = isoUs(c.cancel_observed_at) ?? stopped;
            stop.hidden = false;
            stop.textContent = T.stoppedAfter(fmtMs(stopped - asked), fmtMs(observed - asked));
        } else {
            stop.hidden = true;
        }
    });
}

function renderThumbs() {
    const job = current, d = job?.doc;
    const ul = $('thumbs');
    d.generated_attach_ids.forEach((id, i) => {
        if (job.shown.has(id))
            return;
        job.shown.add(id);
        const img = el('img', { alt: `${T.image} ${i + 1}`, width: 96, height: 96 });
        const a = el('a', { target: '_blank', rel: 'noopener', 'aria-label': `${T.image} ${i + 1} (PNG)` }, img);
        const li = el('li', { 'data-attach': id }, a);
        ul.append(li);
        attachmentUrl(id).then((url) => {
            img.src = url;
            a.href = url;
            li.dataset.loaded = '1';
        }).catch(() => { /* the token form already says why, or the next render retries */
            job.shown.delete(id);
            li.remove();
        });
    });
}

// The seed's handleCancel, against our cancel route.
$('cancel').addEventListener('click', async () => {
    const job = current;
    if (!job?.doc || job.cancelling)
        return;
    if (!confirm(T.cancelConfirm))
        return;
    job.cancelling = true;
    renderJob();
    try {
        const res = await api(`/api/jobs/${job.id}/cancel`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
        });
        if (!res.ok)
            throw new Error('Failed to cancel job');
        const out = await res.json();
        job.doc.cancel_requested = true;
        if (out.success === false && out.job_status)
            job.doc.job_status = out.job_status;
    } catch (err) {
        if (!(err instanceof AuthError))
            alert(T.cancelFailed);
    } finally {
        job.cancelling = false;
        if (current === job)
            renderJob();
    }
});

// ---------------------------------------------------------------- start

async function start() {
    try {
        await refreshList();
    } catch (err) {
        if (!(err instanceof AuthError))
            setConn(`${T.networkError}: ${err.message || err}`);
        return;
    }
    openAllEvents();
    if (current)
        openJob(current.id);
}

document.documentElement.lang = LANG;
for (const e of document.querySelectorAll('[data-t]'))
    if (typeof T[e.dataset.t] === 'string')
        e.textContent = T[e.dataset.t];
$('token').value = token();
comboRow(1, '');
comboRow(2, 'oil painting');
$('f-prompt').value = 'a lighthouse on a stormy coast at dusk';
start();
