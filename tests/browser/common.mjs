// What both browser checks share: Debian's Chromium, and steps that stop at the first
// failure with a screenshot of the page as it was.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export const TIMEOUT = 30_000;

// Opens a page; `shots` is where screenshots go. Chromium: $CHROMIUM, else /usr/bin/chromium.
// `consoleErrors`: console errors fail the check too (not where refused requests are
// expected: the browser logs every 401 as one).
export async function open(shots, viewport, { consoleErrors = true } = {}) {
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // CI runs as root in a container, where Chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  if (consoleErrors) {
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  }

  async function step(name, fn) {
    try {
      await fn();
      console.log(`ok   ${name}`);
    } catch (e) {
      console.error(`FAIL ${name}: ${e.message.split("\n")[0]}`);
      await page.screenshot({ path: join(shots, `${name.replace(/\W+/g, "-")}-failure.png`), fullPage: true }).catch(() => {});
      await browser.close();
      process.exit(1);
    }
  }

  async function screenshot(file) {
    await page.screenshot({ path: join(shots, file), fullPage: true });
  }

  // Fails if the page reported errors; closes the browser.
  async function finish() {
    await browser.close();
    if (problems.length) {
      console.error(`FAIL the page reported errors:\n  ${problems.join("\n  ")}`);
      process.exit(1);
    }
  }

  return { page, step, screenshot, finish };
}
