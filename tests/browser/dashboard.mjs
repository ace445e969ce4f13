// Loads the dashboard of a running control plane in headless Chromium and checks what a
// person would see: the fleet summary, the nodes table with its filter and search, a node's
// detail page (modules, backlog, telemetry chart, events, module logs) and a deployment's rollout.
//
//   node dashboard.mjs <base-url> <screenshot-dir>
//
// Chromium: $CHROMIUM, else /usr/bin/chromium (Debian's package). Exits non-zero with the
// reason on the first check that fails, after saving a screenshot of the page as it was.
import { open, TIMEOUT } from "./common.mjs";

const [base, shots = "."] = process.argv.slice(2);
if (!base) {
  console.error("usage: node dashboard.mjs <base-url> <screenshot-dir>");
  process.exit(2);
}
const { page, step, screenshot, finish } = await open(shots, { width: 1280, height: 900 });

function expectText(locator, pattern) {
  return locator.filter({ hasText: pattern }).first().waitFor({ timeout: TIMEOUT });
}

await step("the dashboard loads and goes live", async () => {
  await page.goto(`${base}/`, { timeout: TIMEOUT });
  await expectText(page.getByTestId("live"), /live · updated/);
});

await step("the summary counts three nodes online", async () => {
  await expectText(page.getByTestId("count-total"), /^\s*3\s*total/);
  await expectText(page.getByTestId("count-online"), /^\s*3\s*online/);
});

await step("the deployments table shows both deployments and a rollout", async () => {
  const table = page.getByTestId("deployments");
  await expectText(table.locator("tr"), /room-stats/);
  await expectText(table.locator("tr"), /temperature-alert.*r2/);
});

await step("the nodes table lists every node", async () => {
  for (const id of ["berlin-1", "berlin-2", "paris-1"]) {
    await page.locator(`tr[data-node="${id}"]`).waitFor({ timeout: TIMEOUT });
  }
});

await step("search narrows the table to matching nodes", async () => {
  await page.locator("#search").fill("site=paris");
  await expectText(page.getByTestId("node-count"), /^1 of 3 nodes$/);
  await page.locator('tr[data-node="paris-1"]').waitFor({ timeout: TIMEOUT });
  if (await page.locator('tr[data-node="berlin-1"]').count()) throw new Error("berlin-1 still listed");
  await page.locator("#search").fill("");
});

await step("the status filter hides nodes of other statuses", async () => {
  await page.locator("#status-filter").selectOption("offline");
  await expectText(page.getByTestId("node-count"), /^0 of 3 nodes$/);
  await page.locator("#status-filter").selectOption("all");
  await expectText(page.getByTestId("node-count"), /^3 of 3 nodes$/);
});

await step("clicking a node opens its detail page", async () => {
  await page.locator('tr[data-node="berlin-1"] a').click();
  await expectText(page.getByTestId("node-id"), /berlin-1\s*online/);
  await expectText(page.getByTestId("facts"), /site=berlin/);
});

await step("the node's modules are running", async () => {
  const modules = page.getByTestId("modules");
  await expectText(modules.locator('tr[data-module="room-stats"]'), /running/);
  await expectText(modules.locator('tr[data-module="temperature-alert"]'), /running/);
});

await step("its telemetry is charted", async () => {
  await page.getByTestId("chart").locator("polyline").waitFor({ timeout: TIMEOUT });
  await expectText(page.getByTestId("latest-value"), /latest \w+: -?\d/);
});

await step("its backlog and events are shown", async () => {
  await expectText(page.getByTestId("backlog"), /records/);
  await expectText(page.getByTestId("events").locator("tr"), /module_started/);
});

await step("its modules' log lines are shown", async () => {
  await expectText(page.getByTestId("logs").locator("tr"), /temperature-alert\s*info\s*threshold-alert ready/);
});

await screenshot("dashboard-node.png");

await step("a deployment page shows its rollout", async () => {
  await page.goto(`${base}/#/deployments/temperature-alert`, { timeout: TIMEOUT });
  await expectText(page.getByTestId("phase"), /canary|batches|complete/);
});

await screenshot("dashboard-rollout.png");
await page.goto(`${base}/`, { timeout: TIMEOUT });
await expectText(page.getByTestId("live"), /live · updated/);
await screenshot("dashboard.png");

await finish();
console.log(`screenshots in ${shots}`);
