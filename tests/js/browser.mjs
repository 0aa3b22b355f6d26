// A real browser for the tests: Debian's chromium, driven by playwright-core.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const chromiumPath = process.env.POINTSTREAM_CHROMIUM || '/usr/bin/chromium';

/** Launches headless chromium, or fails with what to install. */
export async function launchBrowser() {
  if (!existsSync(chromiumPath)) {
    throw new Error(
      `chromium is missing at ${chromiumPath}: install it with \`apt-get update && apt-get install -y chromium\` ` +
        '(tests/js/run does), or point POINTSTREAM_CHROMIUM at a Chromium binary',
    );
  }
  return chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
  });
}

/** Saves a full-page screenshot of each open page of `context` into `dir`; returns the paths. */
export async function screenshots(context, dir, title) {
  if (!context) return [];
  mkdirSync(dir, { recursive: true });
  const base = title.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 80);
  const saved = [];
  let i = 0;
  for (const page of context.pages()) {
    if (page.isClosed()) continue;
    const path = join(dir, `${base}-${++i}.png`);
    await page.screenshot({ path, fullPage: true, timeout: 5_000 });
    saved.push(path);
  }
  if (saved.length) process.stderr.write(`screenshots: ${saved.join(', ')}\n`);
  return saved;
}
