// The official @hopx-ai/sdk (JS) desktop API, unmodified, against a sandboxd desktop sandbox.
// Usage: HOPX_API_KEY=... HOPX_JS_SDK=<path to @hopx-ai/sdk/dist/index.mjs> node js_desktop.mjs <base URL> <template>
// Prints one line per check; exit 1 on the first failure.
import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";

const { Sandbox } = await import(pathToFileURL(process.env.HOPX_JS_SDK).href);
const [baseURL, template] = process.argv.slice(2);
const check = async (name, fn) => {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    throw e;
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const sb = await Sandbox.create({ template, baseURL });
const d = sb.desktop;
try {
  await check("vnc", async () => {
    const started = await d.startVnc();
    assert.equal(started.running, true);
    assert.match(await d.getVncUrl(), /^ws:\/\/.+\/desktop\/vnc\/websocket$/);
  });
  await check("display", async () => {
    const info = await d.getDisplayInfo();
    assert.ok(info.width > 0 && info.height > 0);
    const sizes = await d.getAvailableResolutions();
    assert.ok(sizes.some((s) => s.width === 1024 && s.height === 768));
    await d.setResolution(1024, 768);
    assert.equal((await d.getDisplayInfo()).width, 1024);
  });
  await check("clipboard", async () => {
    await d.setClipboard("from js");
    assert.equal(await d.getClipboard(), "from js");
    assert.equal((await d.getClipboardHistory())[0], "from js");
  });
  await check("input", async () => {
    await d.mouseClick(100, 100, { clicks: 2 });
    await d.mouseMove(200, 200);
    await d.mouseDrag(10, 10, 60, 60);
    await d.mouseScroll(300, 300, 240);
    await d.keyboardType("abc");
    await d.keyboardPress("Escape");
    await d.keyboardCombination(["ctrl", "a"]);
  });
  await check("windows", async () => {
    await sb.commands.run("xterm -title js-term", { background: true });
    let win;
    for (let i = 0; i < 60 && !win; i++) {
      win = (await d.listWindows()).find((w) => w.title === "js-term");
      if (!win) await sleep(500);
    }
    assert.ok(win && Number.isInteger(win.id));
    await d.focusWindow(win.id);
    await d.resizeWindow(win.id, 400, 300);
    await d.minimizeWindow(win.id);
    await d.closeWindow(win.id);
  });
  await check("recording", async () => {
    await d.startRecording("/tmp/js-rec.webm");
    await sleep(1500);
    await d.stopRecording();
    const status = await d.getRecordingStatus();
    assert.equal(status.status, "stopped");
    assert.equal(status.format, "webm");
    const exists = await sb.files.exists("/tmp/js-rec.webm");
    assert.ok(exists);
  });
  await check("region", async () => {
    const region = await d.screenshotRegion(0, 0, 50, 40);
    assert.ok(region.length > 0);
  });
} finally {
  await sb.kill();
}
