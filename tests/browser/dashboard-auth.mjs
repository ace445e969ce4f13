// The dashboard against a control plane with API tokens on: it asks for a token, and with
// one it shows the fleet.
//
//   node dashboard-auth.mjs <base-url> <token> <screenshot-dir>
import { open, TIMEOUT } from "./common.mjs";

const [base, token, shots = "."] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node dashboard-auth.mjs <base-url> <token> <screenshot-dir>");
  process.exit(2);
}
const { page, step, screenshot, finish } = await open(
  shots,
  { width: 1280, height: 700 },
  { consoleErrors: false },
);

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

await screenshot("dashboard-auth.png");
await finish();
