// Headless Chromium driver for book/tools/screenshot.py (playwright-core, no browser download).
// Input: one JSON argument {url, out, width, height, fullPage, executablePath, actions, waitMs}.
// Every request to another host than the local server is blocked and reported: the book must
// work offline. Prints a JSON report on stdout.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const origin = new URL(cfg.url).origin;
const report = { external: [], failed: [], http_errors: [], console_errors: [], page_errors: [], texts: {} };

const browser = await chromium.launch({
  executablePath: cfg.executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: cfg.width, height: cfg.height } });
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith("data:") || url.startsWith("blob:")) {
      return route.continue();
    }
    report.external.push(url);
    return route.abort();
  });
  page.on("requestfailed", (r) => {
    if (!report.external.includes(r.url())) report.failed.push(`${r.url()} (${r.failure()?.errorText})`);
  });
  page.on("response", (r) => { if (r.status() >= 400) report.http_errors.push(`${r.status()} ${r.url()}`); });
  page.on("console", (m) => { if (m.type() === "error") report.console_errors.push(m.text()); });
  page.on("pageerror", (e) => report.page_errors.push(String(e)));

  await page.goto(cfg.url, { waitUntil: "networkidle" });
  // MathJax typesets asynchronously; wait for it when the page uses it
  await page.evaluate(async () => {
    if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
      await window.MathJax.startup.promise;
    }
  });
  await page.waitForTimeout(cfg.waitMs);

  for (const a of cfg.actions) {
    if (a.kind === "press") {
      const el = page.locator(a.selector).first();
      await el.focus();
      for (let i = 0; i < (a.times || 1); i++) await el.press(a.key);
    } else if (a.kind === "set") {
      // range inputs: set the value and fire `input` like a drag would
      await page.locator(a.selector).first().evaluate((el, v) => {
        el.value = v;
        el.dispatchEvent(new Event("input", { bubbles: true }));
        el.dispatchEvent(new Event("change", { bubbles: true }));
      }, a.value);
    } else if (a.kind === "click") {
      await page.locator(a.selector).first().click();
    } else if (a.kind === "wait") {
      await page.waitForTimeout(Number(a.ms));
    } else if (a.kind === "scroll") {
      await page.locator(a.selector).first().scrollIntoViewIfNeeded();
    } else if (a.kind === "text") {
      report.texts[a.selector] = await page.locator(a.selector).allInnerTexts();
    } else if (a.kind === "shot") {
      await page.screenshot({ path: a.path, fullPage: cfg.fullPage });
    } else if (a.kind === "element-shot") {
      await page.locator(a.selector).first().screenshot({ path: a.path });
    }
    await page.waitForTimeout(200);
  }
  await page.screenshot({ path: cfg.out, fullPage: cfg.fullPage });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
