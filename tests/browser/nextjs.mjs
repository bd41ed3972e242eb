// nextjs.mjs - examples/nextjs (the seed's three files, unchanged) in a
// real Chromium driven by playwright-core: the page of `next start` on one
// origin, `imagejobs serve` on another (tests/test_nextjs.sh starts both).
//
//   node nextjs.mjs NEXT_URL API_URL
//
// Prints "ok: ..." per check; exits 1 with "FAIL: ..." at the first that
// fails (every wait is bounded), 2 when Chromium cannot be started.
import { WAIT, check, fail, launch, ok } from './lib.mjs';

const [site, apiUrl] = process.argv.slice(2);
const SEED_CONFIRM = '진행 중인 이미지 생성을 취소하시겠습니까?\n이미 생성된 이미지는 유지됩니다.';

const browser = await launch();

try {
    const page = await browser.newPage({ locale: 'ko-KR' });
    page.setDefaultTimeout(WAIT);
    const errors = [], logs = [], cancels = [];
    page.on('console', (m) => {
        if (m.type() === 'error')
            errors.push(m.text());
        else
            logs.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('response', (r) => {
        if (r.status() >= 400)
            errors.push(`${r.status()} ${r.url()}`);
        if (r.request().method() === 'POST' && /\/api\/jobs\/[^/]+\/cancel$/.test(r.url()))
            cancels.push(r);
    });

    await page.goto(`${site}/?images=10&size=256&steps=40`);
    await check(new URL(site).origin !== new URL(apiUrl).origin, `the page (${new URL(site).origin}) and the API (${new URL(apiUrl).origin}) are two origins`);
    await page.click('#create');
    await page.waitForSelector('#status[data-status="processing"]');
    ok('the page created a job and polls it');
    // the seed's component: "이미지 생성 중..." and "N / M" over its bar
    await page.waitForFunction(() => {
        const bar = document.querySelector('.bg-blue-600.h-2');
        return bar && parseFloat(bar.style.width) > 0;
    }, null, { timeout: WAIT });
    const count = await page.textContent('.flex.justify-between span:last-child');
    await check(/^[1-9]\d* \/ 20$/.test(count.trim()), `the component's progress moves: ${count.trim()}`);
    const label = await page.textContent('.flex.justify-between span:first-child');
    await check(label === '이미지 생성 중...', 'the component is the seed\'s (its label)');

    let dialog = null;
    page.once('dialog', async (d) => {
        dialog = d.message();
        await d.accept();
    });
    await page.click('button:has-text("생성 취소")');
    await check(dialog === SEED_CONFIRM, 'the seed\'s confirm, accepted');
    await page.waitForSelector('#cancel-sent');
    await check(cancels.length === 1, 'one cancel went out, through the seed\'s cancelJob');
    const res = cancels[0];
    const sent = res.request().headers();
    const allow = (await res.allHeaders())['access-control-allow-origin'];
    await check(res.status() === 200 && sent['content-type'] === 'application/json'
        && allow === new URL(site).origin,
        `cross-origin, with the seed's Content-Type (a preflighted request): 200, allowed for ${allow}`);
    const answer = await res.json();
    await check(answer.success === true && answer.current_status === 'processing',
        `the server answered the seed's success: ${answer.message}`);

    await page.waitForSelector('#status[data-status="user_cancelled"]');
    ok('the job ends user_cancelled');
    const saved = logs.find((l) => /^Job cancelled\. \d+ images saved\.$/.test(l));
    await check(saved, `the seed's hook reports the images saved: "${saved}"`);
    const doc = await (await fetch(`${apiUrl}/api/jobs/${answer.job_id}`)).json();
    const kept = Number(await page.getAttribute('#kept', 'data-kept'));
    await check(doc.job_status === 'user_cancelled' && kept === doc.completed_images && kept >= 1
        && kept < doc.total_images, `the page shows the ${kept} images kept, as the server has them`);
    await page.waitForFunction((n) => [...document.querySelectorAll('img')]
        .filter((i) => i.complete && i.naturalWidth === 256).length === n, kept, { timeout: WAIT });
    ok('the kept images load cross-origin');
    await check(!(await page.isVisible('button:has-text("생성 취소")')), 'the component hides its button once the job is not processing');
    if (errors.length)
        fail(`console errors: ${errors.join(' | ')}`);
    ok('no console errors');
    console.log(`job: ${answer.job_id}`);
} catch (err) {
    fail(err.stack || String(err));
} finally {
    await browser.close();
}
