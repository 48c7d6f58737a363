// Opens a fanout HTML report in headless Chromium (through playwright-core), collects console
// errors and page errors, expands the first task with a diff, and saves a screenshot.
// Usage: node html_check.mjs REPORT.html SCREENSHOT.png
// Prints one JSON line: {errors, tasks, expanded, diffVisible, requests}.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.FANOUT_PLAYWRIGHT_DIR || '.', 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');

const [file, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.FANOUT_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
const requests = [];
page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
page.on('pageerror', (e) => errors.push(String(e)));
page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
await page.goto('file://' + path.resolve(file));
const tasks = await page.locator('details.task').count();
// The first task that has a diff: expand it and check its diff is shown.
const withDiff = page.locator('details.task:has(.diff)').first();
let expanded = false, diffVisible = false;
if (await withDiff.count() > 0) {
  await withDiff.locator('summary').click();
  expanded = await withDiff.evaluate((d) => d.open);
  diffVisible = await withDiff.locator('.diff').isVisible();
}
await page.screenshot({ path: shot, fullPage: false });
await browser.close();
console.log(JSON.stringify({ errors, tasks, expanded, diffVisible, requests }));
