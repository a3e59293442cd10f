"use strict";

// The demo page (demo/index.html) in headless Chromium, as its users
// would use it; driven by t/43_demo.t, which serves the page and runs
// the stack.
//
//   node demo_check.js BASE_URL OUT_DIR ROOM
//
// Prints TAP-like lines ("ok - ...", "not ok - ..."); other lines are
// notes.  When the stack must change under the pages, it prints
// "do restart_sidecar" or "do reload_nginx" and waits for a line on
// stdin.  Screenshots go to OUT_DIR.  Exits 1 if a check failed.

const readline = require("readline");
const puppeteer = require("puppeteer-core");
const WebSocket = require("ws");

const [base, outDir, room] = process.argv.slice(2);
const CHROMIUM = process.env.ROOMS_CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 15000;
const MAX_BYTES = 16384;

let failed = 0;
// While the sidecar restarts or nginx reloads, a worker whose link to
// the sidecar is not up yet answers GET /rooms with 503 (SPEC: sidecar
// down) and the page says so: expected then, until every worker is
// linked again (t/43 answers "done" then) and the pages are back.
let linksDown = false;
const outage503 = (l) => linksDown &&
  (/^503 .*\/rooms$/.test(l) ||
   /^console: Failed to load resource: .* 503/.test(l));

function ok(cond, what) {
  console.log(`${cond ? "" : "not "}ok - ${what}`);
  if (!cond) failed++;
  return cond;
}

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on("line", (l) => { const w = waiting.shift(); if (w) w(l); });

function ask(what) {
  return new Promise((resolve) => {
    waiting.push(resolve);
    console.log(`do ${what}`);
  });
}

// waits until fn(arg) is true in the page; false after WAIT_MS
async function until(page, fn, arg, ms) {
  try {
    await page.waitForFunction(fn, { timeout: ms || WAIT_MS, polling: 100 },
                               arg);
    return true;
  } catch (e) {
    return false;
  }
}

const logText = (page) => page.$eval("#log", (el) => el.textContent);

function inLog(page, text, ms) {
  return until(page, (t) => document.getElementById("log").textContent
                            .includes(t), text, ms);
}

function playerShown(page, name, mark) {
  return until(page, ([n, m]) => [...document.querySelectorAll(
    "#players li")].some((li) => li.querySelector(".name").firstChild
      .textContent === n && (!m || li.querySelector(m))), [name, mark]);
}

function connected(page, ms) {
  return until(page, () => document.getElementById("status").textContent
    .startsWith("Connected") && document.getElementById("banner").hidden &&
    document.querySelector("#players li[data-id]") !== null, null, ms);
}

async function newUser(browser, name, viewport) {
  const ctx = await browser.createBrowserContext();   // own localStorage
  const page = await ctx.newPage();
  await page.setViewport(viewport);
  page.bad = [];
  const bad = (l) => {
    if (!outage503(l)) page.bad.push(l);
    else console.log(`expected while the workers relink: ${l}`);
  };
  page.on("response", (r) => {
    if (r.status() >= 400) bad(`${r.status()} ${r.url()}`);
  });
  page.on("pageerror", (e) => bad(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") bad(`console: ${m.text()}`);
  });
  await page.goto(base, { waitUntil: "load" });
  await page.$eval("#room", (el, v) => { el.value = v; }, room);
  await page.$eval("#name", (el, v) => { el.value = v; }, name);
  await page.click("#join-btn");
  ok(await connected(page), `${name}: joined ${room}`);
  return page;
}

// sends text from page; resolves with the states its line went through
async function send(page, text) {
  await page.evaluate(() => {
    window.__states = [];
    window.__obs = new MutationObserver((ms) => {
      for (const m of ms) window.__states.push(m.target.dataset.state);
    });
    window.__obs.observe(document.getElementById("log"), {
      subtree: true, attributes: true, attributeFilter: ["data-state"],
    });
  });
  await page.$eval("#text", (el, v) => {
    el.value = v;
    el.dispatchEvent(new Event("input"));
  }, text);
  await page.click("#send-btn");
  await until(page, () => window.__states.includes("sent") ||
                          window.__states.includes("failed"));
  return page.evaluate(() => {
    window.__obs.disconnect();
    return window.__states;
  });
}

function rawClient(name) {
  const url = base.replace(/^http/, "ws") + "ws?room=" + room + "&name=" +
              name;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.frames = [];
    ws.on("message", (m) => ws.frames.push(JSON.parse(m.toString())));
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
}

async function main() {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-proxy-server"],
  });
  const desktop = { width: 1280, height: 860 };
  const mobile = { width: 375, height: 740, isMobile: true, hasTouch: true };

  try {
    // 1. two users, presence
    const a = await newUser(browser, "Alice", desktop);
    const b = await newUser(browser, "Bob", mobile);
    ok(await playerShown(a, "Bob") && await playerShown(a, "Alice"),
       "Alice's presence panel lists Alice and Bob");
    ok(await playerShown(b, "Alice") && await playerShown(b, "Bob"),
       "Bob's presence panel lists Alice and Bob");

    // 2. typing, then chat both ways; own message sending -> sent
    await a.focus("#text");
    await a.keyboard.type("hello from Alice");
    ok(await until(b, () => document.getElementById("typing").textContent
      .includes("Alice is typing")), "Bob sees Alice typing");
    ok(await playerShown(b, "Alice", ".typing-mark"),
       "Bob's presence panel marks Alice typing");
    await a.$eval("#text", (el) => { el.value = ""; });
    let states = await send(a, "hello from Alice");
    ok(states[0] === "sending" && states[states.length - 1] === "sent",
       `Alice's message went sending -> sent (${states.join(" -> ")})`);
    ok(await inLog(b, "Alice: hello from Alice"), "Bob sees Alice's message");
    ok(await until(b, () => document.getElementById("typing")
      .textContent === ""), "Bob's typing line clears with the message");
    states = await send(b, "hi Alice, Bob here");
    ok(states[states.length - 1] === "sent", "Bob's message sent");
    ok(await inLog(a, "Bob: hi Alice, Bob here"), "Alice sees Bob's message");

    // 3. ready
    await b.click("#ready-btn");
    ok(await playerShown(a, "Bob", ".ready-mark"),
       "Alice's presence panel shows Bob ready");
    ok(await playerShown(b, "Bob", ".ready-mark"),
       "Bob's presence panel shows Bob ready");
    ok(await until(b, () => document.getElementById("ready-btn").disabled),
       "Bob's ready button is done");
    ok(!(await a.$eval("#ready-btn", (el) => el.disabled)),
       "Alice can still say ready");

    // 4. the Rooms panel follows presence
    ok(await until(a, (r) => {
      const li = document.querySelector(`#rooms li[data-code="${r}"]`);
      return li && li.classList.contains("current") &&
             li.textContent.includes("2 connected");
    }, room), "Alice's Rooms panel shows her room with 2 connected");

    await b.evaluate(() => window.scrollTo(0, 0));
    await a.screenshot({ path: `${outDir}/demo-desktop.png` });
    await b.screenshot({ path: `${outDir}/demo-mobile.png` });
    ok(await b.evaluate(() => document.documentElement.scrollWidth <= 375),
       "nothing overflows 375 px");

    // 5. odd envelopes from a raw client are shown safely or skipped
    const m = await rawClient("Mallory");
    const html = '<img src=x onerror="window.__xss=1">';
    for (const env of [
      { type: "chat", data: {} },
      { type: "chat", data: { text: { a: 1 } } },
      { type: "chat", data: { text: null, from: 5 } },
      { type: "vote", data: { choice: { x: [1] } } },
      { type: "chat", data: { text: html } },
    ]) {
      m.send(JSON.stringify(env));
    }
    ok(await inLog(a, html), "Alice sees Mallory's markup as text");
    await inLog(a, "Mallory sent vote");
    const text = await logText(a);
    ok(!/undefined|\[object Object\]|null/.test(text),
       "no undefined, null or [object Object] in Alice's log");
    ok(await a.evaluate(() => window.__xss === undefined &&
                        !document.querySelector("#log img")),
       "Mallory's markup did not run");
    ok(m.frames.filter((f) => f.type === "error").length === 3,
       "the three chats without text were refused (bad_envelope)");
    m.close();

    // 6. the size limit, announced before sending
    const over = "x".repeat(MAX_BYTES);
    await a.$eval("#text", (el, v) => {
      el.value = v;
      el.dispatchEvent(new Event("input"));
    }, over);
    ok(await a.$eval("#size", (el) => el.classList.contains("over") &&
                     el.textContent.includes("16 KiB")),
       "an over-limit message is announced");
    ok(await a.$eval("#send-btn", (el) => el.disabled),
       "Send is off for an over-limit message");
    const mine = await a.$$eval("#log li.mine", (l) => l.length);
    await a.focus("#text");
    await a.keyboard.press("Enter");
    await new Promise((r) => setTimeout(r, 300));
    ok(await a.$eval("#text", (el) => el.value.length) === MAX_BYTES &&
       await a.$$eval("#log li.mine", (l) => l.length) === mine,
       "Enter does not send it, and the text is kept");
    // the longest message the page allows is accepted by the server
    const fit = MAX_BYTES - JSON.stringify({ type: "chat", data: { text: "" },
                                             ref: "x".repeat(24) }).length;
    states = await send(a, "y".repeat(fit));
    ok(states[states.length - 1] === "sent",
       `a message of ${fit} characters (at the limit) is sent`);
    ok(await connected(a, 2000), "Alice is still connected");

    // 7. a late joiner sees the history
    const c = await newUser(browser, "Carol", desktop);
    ok(await inLog(c, "Alice: hello from Alice") &&
       await inLog(c, "Bob: hi Alice, Bob here"),
       "Carol, joining later, sees the history");

    // a failed join (a name over 32 characters: HTTP 400) keeps the log
    await c.click("#leave-btn");
    await c.$eval("#name", (el) => { el.value = "n".repeat(40); });
    await c.click("#join-btn");
    ok(await until(c, () => document.getElementById("status").className ===
                            "error" && !document.getElementById("join-btn")
                            .disabled),
       "Carol's join with a bad name fails");
    ok((await logText(c)).includes("Bob: hi Alice, Bob here"),
       "the failed join kept Carol's conversation");
    // the browser logs the refused handshake itself: expected here
    c.bad = c.bad.filter((l) => !/^console: WebSocket connection to .* 400/
                                  .test(l));

    // 8. F5 keeps room and name, and the room
    await a.reload({ waitUntil: "load" });
    ok(await a.$eval("#room", (el) => el.value) === room &&
       await a.$eval("#name", (el) => el.value) === "Alice",
       "after a reload, room and name are kept");
    ok(await connected(a) && await playerShown(a, "Alice"),
       "after a reload, Alice is back in the room");
    ok(await inLog(a, "Bob: hi Alice, Bob here"),
       "after a reload, the history is there");

    // 9. a sidecar restart and an nginx reload, nobody doing anything
    for (const what of ["restart_sidecar", "reload_nginx"]) {
      linksDown = true;
      console.log(await ask(what));
      const t = `after ${what}`;
      if (what === "reload_nginx") {
        // the old workers close their clients (worker_shutdown_timeout)
        ok(await inLog(a, "Connection lost (1001", 30000) &&
           await inLog(b, "Connection lost (1001", 30000),
           `${what}: the old workers closed both pages`);
      }
      ok(await connected(a, 30000) && await connected(b, 30000),
         `${what}: both are connected`);
      linksDown = false;
      states = await send(a, t);
      ok(states[states.length - 1] === "sent", `${what}: Alice's message sent`);
      ok(await inLog(b, `Alice: ${t}`), `${what}: Bob sees it`);
    }

    for (const [n, p] of [["Alice", a], ["Bob", b], ["Carol", c]]) {
      ok(p.bad.length === 0, `${n}: no failed request, no page error`) ||
        console.log(p.bad.join("\n"));
    }
  } finally {
    await browser.close();
    lines.close();
  }
}

main().then(() => process.exit(failed ? 1 : 0), (e) => {
  console.log(`not ok - ${e.stack}`);
  process.exit(1);
});
