// lib.mjs - what the browser tests share (page.mjs, nextjs.mjs): their
// report lines, and Chromium, started the one way that works here (Debian's
// /usr/bin/chromium, or $IMAGEJOBS_CHROMIUM; --no-sandbox as root; never a
// downloaded browser).
import { chromium } from 'playwright-core';

export const WAIT = 30000; // the bound of every wait: generous for a loaded CI machine

export function fail(msg) {
    console.log(`FAIL: ${msg}`);
    process.exit(1);
}

export function ok(msg) {
    console.log(`ok: ${msg}`);
}

export async function check(cond, msg) {
    if (!(await cond))
        fail(msg);
    ok(msg);
}

// Chromium, headless; exits 2 with the reason when it cannot be started.
export async function launch() {
    const path = process.env.IMAGEJOBS_CHROMIUM || '/usr/bin/chromium';
    try {
        return await chromium.launch({ executablePath: path, args: ['--no-sandbox'], headless: true });
    } catch (err) {
        console.log(`FAIL: cannot start Chromium (${path}): ${err.message.split('\n')[0]}`);
        process.exit(2);
    }
}
