// The dashboard against a control plane with API tokens on: it asks for a token, and with
// one it shows the fleet.
//
//   node dashboard-auth.mjs <base-url> <token> <screenshot-dir>
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, token, shots = "."] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node dashboard-auth.mjs <base-url> <token> <screenshot-dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const TIMEOUT = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 700 } });
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

async function step(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e.message.split("\n")[0]}`);
    await page.screenshot({ path: join(shots, "dashboard-auth-failure.png"), fullPage: true }).catch(() => {});
    await browser.close();
    process.exit(1);
  }
}

await step("without a token the page says so and asks for one", async () => {
  await page.goto(`${base}/`, { timeout: TIMEOUT });
  await page.locator("#banner").filter({ hasText: /needs a token/ }).waitFor({ timeout: TIMEOUT });
  await page.locator("#token-form").waitFor({ state: "visible", timeout: TIMEOUT });
});

await step("a wrong token is refused", async () => {
  await page.locator("#token-input").fill("wdg_00000000_wrong");
  await page.locator("#token-form button[type=submit]").click();
  await page.locator("#banner").filter({ hasText: /not valid/ }).waitFor({ timeout: TIMEOUT });
});

await step("with the token the fleet shows", async () => {
  await page.locator("#token-input").fill(token);
  await page.locator("#token-form button[type=submit]").click();
  await page.getByTestId("count-online").filter({ hasText: /^\s*1\s*online/ }).waitFor({ timeout: TIMEOUT });
  await page.locator('tr[data-node="guarded-1"]').waitFor({ timeout: TIMEOUT });
  if (await page.locator("#banner").isVisible()) throw new Error("the error banner is still shown");
});

await page.screenshot({ path: join(shots, "dashboard-auth.png"), fullPage: true });
if (problems.length) {
  console.error(`FAIL the page reported errors:\n  ${problems.join("\n  ")}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
