// page.mjs - the page served at / (web/), in a real Chromium driven by
// playwright-core, against a real `imagejobs serve` (tests/test_browser.sh
// starts it, with Redis and PostgreSQL).
//
//   node page.mjs page URL SHOTDIR          auth off: submit, watch, cancel
//   node page.mjs auth URL SHOTDIR TOKEN PID auth required: wrong token, right
//                                          one; then SIGTERM to PID (the server) and
//                                          a cancel that fails
//
// Prints "ok: ..." per check; exits 1 with "FAIL: ..." at the first that
// fails (every wait is bounded), 2 when Chromium cannot be started.
import { WAIT, check, fail, launch, ok } from './lib.mjs';
import { mkdirSync } from 'node:fs';

const [mode, base, shots, goodToken, servePid] = process.argv.slice(2);
const EN_CONFIRM = 'Cancel the image generation in progress? Images already generated are kept.';
const KO_CONFIRM = '진행 중인 이미지 생성을 취소하시겠습니까?\n이미 생성된 이미지는 유지됩니다.';

const browser = await launch();
mkdirSync(shots, { recursive: true });

// A page that records its console errors and uncaught exceptions: the page
// must have none.
async function open(options = {}) {
    const ctx = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 }, ...options });
    const page = await ctx.newPage();
    page.errors = [];
    page.on('console', (m) => {
        if (m.type() === 'error')
            page.errors.push(m.text());
    });
    page.on('pageerror', (e) => page.errors.push(String(e)));
    page.setDefaultTimeout(WAIT);
    return page;
}

function noErrors(page, what) {
    if (page.errors.length)
        fail(`${what}: console errors: ${page.errors.join(' | ')}`);
    ok(`${what}: no console errors`);
}

async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (goodToken)
        headers.Authorization = `Bearer ${goodToken}`;
    const res = await fetch(base + path, { ...options, headers });
    return { status: res.status, body: await res.json().catch(() => null) };
}

async function fillJob(page, { prompt, images, size, steps }) {
    await page.fill('#f-prompt', prompt);
    await page.fill('#f-images', String(images));
    await page.fill('#f-width', String(size));
    await page.fill('#f-height', String(size));
    await page.fill('#f-steps', String(steps));
}

async function submitted(page) {
    await page.waitForFunction(() => document.querySelector('#detail')?.dataset.job, null, { timeout: WAIT });
    return page.evaluate(() => document.querySelector('#detail').dataset.job);
}

async function pageTest() {
    const page = await open();
    const resp = await page.goto(`${base}/`);
    await check(resp.status() === 200, 'GET / answers 200');
    const csp = resp.headers()['content-security-policy'] || '';
    await check(csp.includes("default-src 'self'") && !csp.includes('unsafe'), 'the page has a strict CSP');
    await page.waitForSelector('#conn:text("live")');
    ok('the job list follows GET /api/events');

    // the server's validation, next to the field
    await fillJob(page, { prompt: 'validation', images: 2, size: 100, steps: 5 });
    await page.click('#submit-job');
    await page.waitForSelector('#err-width:not(:empty)');
    const werr = await page.textContent('#err-width');
    await check(/width must be a multiple of 8/.test(werr), `a bad width is shown next to it: "${werr}"`);
    await page.fill('#f-seed-0', '-1');
    await page.fill('#f-width', '128');
    await page.fill('#f-height', '128');
    await page.click('#submit-job');
    await page.waitForSelector('#combos .combo-row:first-child .error:not(:empty)');
    const serr = await page.textContent('#combos .combo-row:first-child .error');
    await check(/combinations\[0\]\.seed/.test(serr), `a bad seed is shown next to its combination: "${serr}"`);
    await page.fill('#f-seed-0', '1');
    // Chromium reports each refused request of this part (400) on the
    // console, as it does any 4xx: those two were meant; none may follow
    page.errors = page.errors.filter((e) => !/status of 400/.test(e));

    // a job long enough to cancel in the middle: 2 combinations of 10 images
    const cancels = [];
    page.on('request', (r) => {
        if (r.method() === 'POST' && /\/api\/jobs\/[^/]+\/cancel$/.test(r.url()))
            cancels.push(r.url());
    });
    await fillJob(page, { prompt: 'a lighthouse on a stormy coast at dusk', images: 10, size: 256, steps: 40 });
    await page.click('#submit-job');
    const id = await submitted(page);
    ok(`job ${id} created from the form`);
    await page.waitForSelector(`#job-list li[data-job="${id}"]`);
    ok('the new job is in the list');
    await page.waitForFunction(() => [...document.querySelectorAll('#combo-list .bar')]
        .some((b) => Number(b.getAttribute('aria-valuenow')) > 0), null, { timeout: WAIT });
    ok('a combination\'s progress bar moves');
    await page.waitForSelector('#combo-list img.preview[src^="data:image/png"]');
    ok('a live preview is shown');
    await page.waitForSelector('#thumbs li[data-loaded="1"] img[src^="blob:"]');
    ok('a thumbnail appears once an image is recorded');
    const bar = await page.getAttribute('#overall-bar', 'aria-valuenow');
    await check(Number(bar) > 0, `the overall bar moved (${bar}%)`);
    await check(page.isVisible('#cancel'), 'the cancel button shows while the job runs');
    const full = await page.$eval('#thumbs li[data-loaded="1"] img', (i) => [i.naturalWidth, i.naturalHeight]);
    await check(full[0] === 256 && full[1] === 256, `a thumbnail is the full PNG (${full.join('x')})`);
    const [popup] = await Promise.all([page.context().waitForEvent('page'),
        page.click('#thumbs li[data-loaded="1"] a')]);
    await popup.waitForLoadState();
    const shown = await popup.evaluate(() => {
        const i = document.querySelector('img');
        return i ? [location.protocol, i.naturalWidth] : [location.protocol, 0];
    });
    await check(shown[0] === 'blob:' && shown[1] === 256, `clicking it opens the full PNG (${shown.join(' ')})`);
    await popup.close();
    await page.screenshot({ path: `${shots}/page-mid-job.png`, fullPage: true });
    ok(`screenshot ${shots}/page-mid-job.png`);

    // the seed's confirm, accepted; the button cannot be pressed again
    let dialog = null;
    page.once('dialog', async (d) => {
        dialog = d.message();
        await d.accept();
    });
    await page.click('#cancel');
    await check(dialog === EN_CONFIRM, `the confirm says the seed's text in English: "${dialog}"`);
    let second = true;
    try {
        await page.click('#cancel', { timeout: 1500 });
    } catch {
        second = false;
    }
    await check(!second, 'a second press of the cancel button is not possible');
    await page.waitForSelector('#detail[data-status="user_cancelled"]');
    ok('the job ends user_cancelled');
    await check(cancels.length === 1, `exactly one cancel request went out (${cancels.length})`);

    const doc = (await api(`/api/jobs/${id}`)).body;
    await check(doc.job_status === 'user_cancelled' && doc.completed_images >= 1
        && doc.completed_images < doc.total_images,
        `the server agrees: user_cancelled with ${doc.completed_images} of ${doc.total_images} kept`);
    await page.waitForFunction((n) => document.querySelectorAll('#thumbs li[data-loaded="1"]').length === n,
        doc.completed_images, { timeout: WAIT });
    ok(`all ${doc.completed_images} images made before the cancel are shown`);
    const summary = await page.textContent('#cancel-summary');
    await check(summary.includes(`${doc.completed_images} of ${doc.total_images} images kept`),
        `the kept images are said: "${summary}"`);
    const cancelled = doc.combinations.filter((c) => c.status === 'cancelled').length;
    const stops = await page.$$eval('#combo-list .stop:not([hidden])', (ps) => ps.map((p) => p.textContent));
    await check(cancelled > 0 && stops.length === cancelled && stops.every((s) => /stopped [\d.]+ ms after the cancel/.test(s)),
        `each cancelled combination shows its stop time: ${JSON.stringify(stops)}`);
    await check(!(await page.isVisible('#cancel')), 'the cancel button is gone once the job has ended');
    await page.waitForSelector(`#job-list li[data-job="${id}"][data-status="user_cancelled"]`);
    ok('the job list shows it cancelled');
    await page.selectOption('#status-filter', 'user_cancelled');
    await page.waitForFunction((j) => {
        const items = [...document.querySelectorAll('#job-list li')];
        return items.length > 0 && items.every((li) => li.dataset.status === 'user_cancelled')
            && items.some((li) => li.dataset.job === j);
    }, id, { timeout: WAIT });
    ok('the status filter keeps the cancelled job');
    await page.screenshot({ path: `${shots}/page-cancelled.png`, fullPage: true });
    ok(`screenshot ${shots}/page-cancelled.png`);
    noErrors(page, 'the served page');

    // Korean: the seed's own text; dismissing sends nothing
    const ko = await open({ locale: 'ko-KR' });
    await ko.goto(`${base}/`);
    await fillJob(ko, { prompt: '등대', images: 10, size: 256, steps: 40 });
    await ko.click('#submit-job');
    const id2 = await submitted(ko);
    await ko.waitForSelector('#cancel:visible');
    let koText = null;
    ko.once('dialog', async (d) => {
        koText = d.message();
        await d.dismiss();
    });
    const before = cancels.length;
    await ko.click('#cancel');
    await check(koText === KO_CONFIRM, 'the confirm says the seed\'s Korean text when the browser prefers Korean');
    await check((await ko.textContent('#cancel')) === '생성 취소' && cancels.length === before,
        'dismissing the confirm sends no cancel');
    await api(`/api/jobs/${id2}/cancel`, { method: 'POST' });
    noErrors(ko, 'the page in Korean');

    // a phone-sized screen, used by keyboard only
    const phone = await open({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    await phone.goto(`${base}/`);
    await phone.waitForSelector('#conn:text("live")');
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await check(overflow <= 0, `nothing overflows a 375 px screen (${overflow} px)`);
    await phone.focus('#f-prompt');
    await phone.keyboard.press('Control+A');
    await phone.keyboard.type('typed on a phone');
    await phone.fill('#f-images', '1');
    await phone.fill('#f-width', '64');
    await phone.fill('#f-height', '64');
    await phone.fill('#f-steps', '2');
    await phone.focus('#submit-job');
    await phone.keyboard.press('Enter');
    const id3 = await submitted(phone);
    await phone.waitForSelector('#detail[data-status="completed"]');
    ok(`a job submitted by keyboard on a phone runs to completed (${id3})`);
    await phone.focus(`#job-list li[data-job="${id}"] button`);
    // an event redraws the list (a job made elsewhere): the focus stays on
    // the same job, so Enter still opens it
    const other = await api('/api/jobs', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'made while a list entry has the focus', images_per_combination: 1,
            width: 64, height: 64, steps: 1 }),
    });
    await check(other.status === 201, `a job made by the API (${other.status})`);
    await phone.waitForSelector(`#job-list li[data-job="${other.body.job_id}"]`);
    const still = await phone.evaluate(() => document.activeElement?.closest('#job-list li')?.dataset.job);
    await check(still === id, `the focus stays on the list's job when the list is redrawn (${still})`);
    await phone.keyboard.press('Enter');
    await phone.waitForSelector(`#detail[data-job="${id}"][data-status="user_cancelled"]`);
    ok('a job of the list opens by keyboard');
    noErrors(phone, 'the page on a phone');
}

async function authTest() {
    const page = await open();
    await page.goto(`${base}/`);
    await page.waitForSelector('#auth:not([hidden])');
    const asked = await page.textContent('#auth-msg');
    await check(/requires an API token/.test(asked), `without a token the page asks for one: "${asked}"`);
    await page.fill('#token', 'ij_not-a-real-token-0000000000000000');
    await page.click('#auth-form button[type="submit"]');
    await page.waitForFunction(() => /refused/.test(document.querySelector('#auth-msg').textContent), null, { timeout: WAIT });
    const refused = await page.textContent('#auth-msg');
    await check(await page.isVisible('#auth'), `a wrong token is refused with a clear message: "${refused}"`);
    await page.fill('#token', goodToken);
    await page.click('#auth-form button[type="submit"]');
    await page.waitForSelector('#auth', { state: 'hidden' });
    // the refusals above (401) are on the console, as Chromium reports any
    // 4xx; none may follow
    page.errors = page.errors.filter((e) => !/status of 401/.test(e));
    await page.waitForSelector('#conn:text("live")');
    ok('the right token opens the page, and its event stream');
    await fillJob(page, { prompt: 'with a key', images: 2, size: 64, steps: 2 });
    await page.click('#submit-job');
    const id = await submitted(page);
    await page.waitForSelector('#detail[data-status="completed"]');
    await page.waitForFunction(() => document.querySelectorAll('#thumbs li[data-loaded="1"] img[src^="blob:"]').length === 4,
        null, { timeout: WAIT });
    ok(`a job made with the key runs, and its images load with the token (${id})`);
    await page.reload();
    await page.waitForSelector(`#job-list li[data-job="${id}"]`);
    await check(await page.isHidden('#auth'), 'the token is kept in the browser\'s storage');
    const stored = await page.evaluate(() => localStorage.getItem('imagejobs.token'));
    await check(stored === goodToken, 'localStorage holds the token');
    noErrors(page, 'the page with auth required');

    // a cancel that fails: the seed's alert, and the button back. The
    // server is stopped for real (SIGTERM) while the job runs.
    const long = await api('/api/jobs', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'left running', images_per_combination: 50, width: 256, height: 256, steps: 40 }),
    });
    await page.click(`#job-list li[data-job="${long.body.job_id}"] button`).catch(async () => {
        await page.reload();
        await page.click(`#job-list li[data-job="${long.body.job_id}"] button`);
    });
    await page.waitForSelector('#cancel:visible');
    process.kill(Number(servePid), 'SIGTERM');
    const deadline = Date.now() + WAIT;
    for (;;) {
        try {
            await fetch(`${base}/healthz`);
        } catch {
            break;
        }
        if (Date.now() > deadline)
            fail('the server did not stop');
        await new Promise((r) => setTimeout(r, 100));
    }
    const dialogs = [];
    page.on('dialog', async (d) => {
        dialogs.push([d.type(), d.message()]);
        await d.accept();
    });
    await page.click('#cancel');
    await page.waitForFunction(() => !document.querySelector('#cancel').disabled, null, { timeout: WAIT });
    await check(dialogs.length === 2 && dialogs[0][0] === 'confirm' && dialogs[1][0] === 'alert'
        && dialogs[1][1] === 'The cancel request failed.', `a failed cancel is an alert: ${JSON.stringify(dialogs)}`);
    await check((await page.textContent('#cancel')) === 'Cancel generation', 'the button is back, to try again');
}

try {
    if (mode === 'page')
        await pageTest();
    else if (mode === 'auth')
        await authTest();
    else
        fail(`unknown mode ${mode}`);
} catch (err) {
    fail(err.stack || String(err));
} finally {
    await browser.close();
}
