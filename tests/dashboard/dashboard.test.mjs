// The admin dashboard in a real browser: farmgate with a demo farm of three members (small HTTP
// servers this script runs on ports the system picks),
// headless Chromium driven by playwright-core, and the page checked the way a person would use
// it (see tests/dashboard/run.sh, which installs what this needs and runs it).
//
// Environment (all optional):
//   FARMGATE_BIN       the binary (default target/debug/farmgate)
//   CHROMIUM           the browser (default /usr/bin/chromium)
//   DASHBOARD_TMP      a directory for the config, the plugin folder, the browser profile and
//                      a pid file (default: a fresh one, removed at the end)
//   DASHBOARD_SHOT     where the screenshot goes (default target/dashboard.png)

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, appendFileSync } from "node:fs";
import { createServer, request } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const farmgateBin = process.env.FARMGATE_BIN || join(repo, "target", "debug", "farmgate");
const chromiumBin = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshot = process.env.DASHBOARD_SHOT || join(repo, "target", "dashboard.png");
const ownTmp = !process.env.DASHBOARD_TMP;
const tmp = process.env.DASHBOARD_TMP || mkdtempSync(join(tmpdir(), "farmgate-dashboard-"));
mkdirSync(tmp, { recursive: true });

const MEMBERS = ["web1", "web2", "web3"];
const STEP_TIMEOUT = 15_000;

let passed = 0;
let failed = 0;
function pass(what) {
  passed++;
  console.log(`ok ${passed} - ${what}`);
}

/** The farmgate process while it runs, so an abrupt exit can still end it. */
let running = null;
function killRunning() {
  if (running && running.exitCode === null && running.signalCode === null) running.kill("SIGKILL");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a truthy value; throws with `what` after `ms`. */
async function waitFor(what, probe, ms = STEP_TIMEOUT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
    }
    await sleep(100);
  }
}

/**
 * The farm's members: HTTP servers answering "Hello from <name>" to everything, each on a port
 * the system picked and kept for the whole test (a port chosen, released and handed to
 * farmgate could be taken by another process in between).
 */
function startMembers() {
  return Promise.all(
    MEMBERS.map(
      (name) =>
        new Promise((res, rej) => {
          const s = createServer((req, resp) => {
            resp.writeHead(200, { "content-type": "text/html; charset=utf-8" });
            resp.end(`<!doctype html>\n<h1>Hello from ${name}</h1>\n`);
          });
          s.once("error", rej);
          s.listen(0, "127.0.0.1", () => res(s));
        }),
    ),
  );
}

/** farmgate's environment: this process's, less what would change its config. */
function childEnv() {
  const env = { ...process.env };
  delete env.FARMGATE_ADMIN_TOKEN;
  delete env.FARMGATE_AFFINITY_KEY;
  delete env.RUST_LOG;
  return env;
}

/** One HTTP request with a deadline; resolves to { status, body }. */
function httpGet(url, headers = {}, ms = 5_000) {
  return new Promise((res, rej) => {
    const req = request(url, { headers, timeout: ms }, (r) => {
      let body = "";
      r.setEncoding("utf8");
      r.on("data", (c) => (body += c));
      r.on("end", () => res({ status: r.statusCode, body }));
      r.on("error", rej);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer from ${url} within ${ms} ms`)));
    req.on("error", rej);
    req.end();
  });
}

function writeConfig(ports) {
  const members = MEMBERS.map((m, i) => `  { name = "${m}", host = "127.0.0.1", port = ${ports[i]}, weight = 1 },`).join("\n");
  const text = `# Written by tests/dashboard/dashboard.test.mjs.
version = 1

[access_log]
format = "off"

[plugins]
dir = ${JSON.stringify(join(tmp, "plugins.d"))}
cache_dir = ${JSON.stringify(join(tmp, "cache"))}

[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"

[[rules]]
name = "demo"
listeners = ["web"]
public_names = ["localhost", "127.0.0.1"]
paths = ["/"]
farm = "demo"

[[farms]]
name = "demo"
members = [
${members}
]
`;
  const file = join(tmp, "farmgate.toml");
  writeFileSync(file, text);
  return file;
}

/** Starts farmgate; resolves once its log names the admin address and the web listener. */
function startFarmgate(config) {
  const child = spawn(farmgateBin, ["--log-format", "json", "run", "--config", config], {
    cwd: tmp,
    env: childEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  appendFileSync(join(tmp, "pids"), `${child.pid}\n`);
  running = child;
  const log = [];
  let admin = null;
  let web = null;
  let exited = null;
  let onChange = () => {};
  const take = (stream) => {
    let pending = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        log.push(line);
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        if (entry.message === "admin listener" && entry.addr) admin = entry.addr;
        const serving = /farmgate is serving: point a browser at http:\/\/([^/\s]+)\//.exec(entry.message || "");
        if (serving && entry.listener === "web") web = serving[1].replace(/^localhost:/, "127.0.0.1:");
        onChange();
      }
    });
  };
  take(child.stdout);
  take(child.stderr);
  child.on("exit", (code, signal) => {
    exited = signal || `exit code ${code}`;
    // Gone: run.sh's cleanup must not signal whatever process reuses the id.
    writeFileSync(join(tmp, "pids"), "");
    onChange();
  });
  const ready = new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`farmgate did not log its listeners within 60 s:\n${log.join("\n")}`)), 60_000);
    onChange = () => {
      if (exited) {
        clearTimeout(timer);
        rej(new Error(`farmgate stopped (${exited}) before serving:\n${log.join("\n")}`));
      } else if (admin && web) {
        clearTimeout(timer);
        res();
      }
    };
  });
  return {
    child,
    log,
    ready: ready.then(() => ({ admin, web })),
    get exited() {
      return exited;
    },
  };
}

async function stopFarmgate(fg) {
  if (!fg || fg.exited) return;
  fg.child.kill("SIGTERM");
  const deadline = Date.now() + 10_000;
  while (!fg.exited && Date.now() < deadline) await sleep(50);
  if (!fg.exited) {
    fg.child.kill("SIGKILL");
    await sleep(200);
  }
}

async function main() {
  // --- config -------------------------------------------------------------------------------
  const members = await startMembers();
  const ports = members.map((s) => s.address().port);
  const config = writeConfig(ports);
  const check = spawnSync(farmgateBin, ["check", config], { encoding: "utf8", timeout: 30_000, env: childEnv() });
  if (check.status !== 0) throw new Error(`farmgate check failed (${check.status ?? check.error}):\n${check.stdout}${check.stderr}`);
  pass(`farmgate check accepts the test config (members on ports ${ports.join(", ")})`);
  // A file that is not a plugin: the plugins panel lists it as rejected, with the reason.
  mkdirSync(join(tmp, "plugins.d"), { recursive: true });
  writeFileSync(join(tmp, "plugins.d", "broken.wasm"), "not wasm at all");

  // --- farmgate -----------------------------------------------------------------------------
  const fg = startFarmgate(config);
  let context;
  const problems = [];
  try {
    const { admin, web } = await fg.ready;
    pass(`farmgate serves: proxy on ${web}, admin on ${admin}`);
    const api = async (path) => {
      const r = await httpGet(`http://${admin}${path}`);
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.body}`);
      return JSON.parse(r.body);
    };
    // Wait until a member answers through the proxy.
    await waitFor("the demo farm to answer through the proxy", async () => {
      const r = await httpGet(`http://${web}/`, { Host: "localhost" });
      return r.status === 200 && /Hello from web\d/.test(r.body);
    });

    // --- browser ----------------------------------------------------------------------------
    const profile = join(tmp, "chromium-profile");
    rmSync(profile, { recursive: true, force: true });
    mkdirSync(profile);
    context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumBin,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1500, height: 700 },
      timeout: 60_000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()} (${m.location().url || "?"})`);
    });
    const noProblems = () => {
      if (problems.length) throw new Error(`the page reported errors:\n  ${problems.join("\n  ")}`);
    };

    const resp = await page.goto(`http://${admin}/dashboard`, { waitUntil: "load" });
    if (!resp || resp.status() !== 200) throw new Error(`GET /dashboard: ${resp && resp.status()}`);
    pass("the dashboard page loads");

    const farm = page.locator('section.farm[data-farm="demo"]');
    await farm.waitFor({ state: "visible" });
    pass("the demo farm section renders");

    const row = (m) => farm.locator(`tr[data-member="${m}"]`);
    const badge = (m) => row(m).locator("span.state");
    const stateOf = (m) => badge(m).getAttribute("data-state");
    await waitFor("three member rows web1..web3, all active", async () => {
      const names = await farm.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.member));
      if (names.join(",") !== MEMBERS.join(",")) return false;
      for (const m of MEMBERS) if ((await stateOf(m)) !== "active") return false;
      return true;
    });
    pass("rows web1, web2, web3 render with state active");

    // The Requests column, read off the page.
    const header = await farm.locator("thead th").allTextContents();
    const col = header.findIndex((h) => h.trim().toLowerCase() === "requests");
    if (col < 0) throw new Error(`no Requests column in ${JSON.stringify(header)}`);
    const requestsOnPage = async (m) => Number((await row(m).locator("td").nth(col).textContent()).trim());

    // --- traffic --------------------------------------------------------------------------
    const before = {};
    for (const m of MEMBERS) before[m] = await requestsOnPage(m);
    const served = Object.fromEntries(MEMBERS.map((m) => [m, 0]));
    const N = 9;
    for (let i = 0; i < N; i++) {
      const r = await httpGet(`http://${web}/`, { Host: "localhost" });
      const who = /Hello from (web\d)/.exec(r.body);
      if (r.status !== 200 || !who) throw new Error(`request ${i + 1} through the proxy: ${r.status} ${r.body.slice(0, 200)}`);
      served[who[1]]++;
    }
    pass(`${N} requests through the proxy answered (${MEMBERS.map((m) => `${m}: ${served[m]}`).join(", ")})`);
    await waitFor("the Requests counters on the page to rise", async () => {
      for (const m of MEMBERS) if ((await requestsOnPage(m)) < before[m] + served[m]) return false;
      return true;
    });
    const after = {};
    for (const m of MEMBERS) after[m] = await requestsOnPage(m);
    pass(`the page's Requests counters rose (${MEMBERS.map((m) => `${m}: ${before[m]} -> ${after[m]}`).join(", ")})`);
    // Sparklines of requests per second and response time, one point per refresh.
    for (const m of MEMBERS) {
      for (const kind of ["rate", "response"]) {
        await waitFor(`${m}'s ${kind} sparkline to have points`, async () =>
          Number(await row(m).locator(`td[data-spark="${kind}"] svg.spark`).getAttribute("data-points")) >= 2);
      }
    }
    pass("every member has a requests-per-second and a response-time sparkline");
    noProblems();

    // --- plugins ------------------------------------------------------------------------------
    const plugins = page.locator("section.plugins");
    await plugins.waitFor({ state: "visible" });
    const builtinRows = await plugins.locator('tr[data-builtin="true"]').evaluateAll((rows) => rows.map((r) => r.dataset.plugin));
    if (builtinRows.length < 4) throw new Error(`the plugins panel lists built-ins ${JSON.stringify(builtinRows)}`);
    const balance = plugins.locator('tr[data-plugin="builtin-balance"]');
    await waitFor("builtin-balance's calls to show the traffic", async () => Number((await balance.locator('td[data-field="calls"]').textContent()).trim()) >= N);
    if ((await balance.locator("span.state").getAttribute("data-state")) !== "enabled") throw new Error("builtin-balance is not shown enabled");
    const failuresText = await balance.locator('td[data-field="failures"]').textContent();
    if (!/affinity: 0/.test(failuresText)) throw new Error(`builtin-balance's failures by hook read ${JSON.stringify(failuresText)}`);
    pass(`the plugins panel lists the built-ins (${builtinRows.join(", ")}) with calls, failures by hook and state`);
    const rejected = plugins.locator('tr.rejected');
    await waitFor("the rejected broken.wasm row", async () => (await rejected.count()) === 1);
    const reason = await rejected.locator('td[data-field="reason"]').textContent();
    if (!reason.includes("broken.wasm") || !reason.includes("not a WebAssembly file")) throw new Error(`the rejected row reads ${JSON.stringify(reason)}`);
    pass("the plugins panel shows broken.wasm as rejected, with the reason");
    noProblems();

    // --- drain web2 -------------------------------------------------------------------------
    await row("web2").locator('button[data-action="drain"]').click();
    await waitFor("web2's badge to read draining", async () => (await stateOf("web2")) === "draining");
    pass("after Drain, web2's badge reads draining");
    await waitFor("web2's Drain button to be disabled", () => row("web2").locator('button[data-action="drain"]').isDisabled());
    if (!(await row("web2").locator('button[data-action="resume"]').isEnabled())) throw new Error("web2's Resume button is not enabled while it drains");
    pass("web2's Drain button is disabled and its Resume button enabled");
    for (const m of ["web1", "web3"]) {
      if ((await stateOf(m)) !== "active") throw new Error(`${m} is ${await stateOf(m)}, not active, after draining web2`);
    }
    pass("web1 and web3 stay active");

    const demo = await api("/api/farms/demo");
    const web2 = demo.members.find((m) => m.name === "web2");
    if (!web2 || web2.admin_state !== "draining") throw new Error(`GET /api/farms/demo: web2 is ${JSON.stringify(web2)}`);
    pass("GET /api/farms/demo reports web2's admin_state as draining");

    // Let the page settle on a fresh poll so the screenshot shows the current state.
    const status = page.locator("#status");
    await waitFor("the status line to show a successful update", async () => /^updated /.test(await status.textContent()));
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    pass(`screenshot with web2 draining saved to ${screenshot}`);

    // --- resume web2 ------------------------------------------------------------------------
    await row("web2").locator('button[data-action="resume"]').click();
    await waitFor("web2's badge to read active again", async () => (await stateOf("web2")) === "active");
    await waitFor("web2's Drain button to be enabled again", () => row("web2").locator('button[data-action="drain"]').isEnabled());
    const demo2 = await api("/api/farms/demo");
    const web2b = demo2.members.find((m) => m.name === "web2");
    if (!web2b || web2b.admin_state !== "active") throw new Error(`after Resume, GET /api/farms/demo: web2 is ${JSON.stringify(web2b)}`);
    pass("after Resume, web2 is active again on the page and in the API");

    if ((await status.getAttribute("class")).includes("error")) throw new Error(`the status line shows an error: ${await status.textContent()}`);
    noProblems();
    pass("no page errors or console errors");
  } finally {
    if (context) await context.close().catch(() => {});
    await stopFarmgate(fg);
    for (const m of members) {
      m.closeAllConnections();
      m.close();
    }
  }
}

const overall = setTimeout(() => {
  console.error("not ok - the dashboard test did not finish within 150 s");
  killRunning();
  process.exit(1);
}, 150_000);
overall.unref();
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    console.error(`not ok - stopped by ${sig}`);
    killRunning();
    process.exit(1);
  });
}

const started = Date.now();
try {
  await main();
} catch (e) {
  failed++;
  console.error(`not ok ${passed + failed} - ${e.stack || e.message}`);
} finally {
  if (ownTmp) rmSync(tmp, { recursive: true, force: true });
}
console.log(`took ${((Date.now() - started) / 1000).toFixed(1)} s`);
console.log(`dashboard: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
