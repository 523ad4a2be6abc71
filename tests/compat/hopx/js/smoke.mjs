// The official @hopx-ai/sdk, unmodified, against sandboxd: only baseURL changes.
// Usage: HOPX_API_KEY=... node smoke.mjs <control-plane URL>. Prints one line per check; exit 1 on failure.
import { Sandbox, FileNotFoundError, NotFoundError, SandboxExpiredError } from "@hopx-ai/sdk";
import assert from "node:assert/strict";

const baseURL = process.argv[2];
const done = [];
// A step that stalls fails on its own with its name, instead of hanging the whole run.
const STEP_MS = 90_000;
const check = async (name, fn) => {
  let timer;
  const stall = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step "${name}" stalled for ${STEP_MS} ms`)), STEP_MS);
  });
  try {
    await Promise.race([fn(), stall]);
    clearTimeout(timer);
    done.push(name);
    console.log(`ok ${name}`);
  } catch (e) {
    clearTimeout(timer);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    throw e;
  }
};

let sb;
try {
  await check("health", async () => {
    assert.equal((await Sandbox.healthCheck(baseURL)).status, "healthy");
  });
  await check("templates", async () => {
    const names = (await Sandbox.listTemplates({ baseURL })).map((t) => t.name);
    assert.ok(names.includes("code-interpreter"), names.join(","));
  });
  await check("create", async () => {
    sb = await Sandbox.create({ template: "code-interpreter", baseURL, envVars: { ROOMF_JS: "yes" } });
    const info = await sb.getInfo();
    assert.equal(info.status, "running");
  });
  await check("run_code", async () => {
    const r = await sb.runCode("print('hello from js')");
    assert.equal(r.stdout, "hello from js\n");
    assert.equal(r.success, true);
    const bad = await sb.runCode("1/0");
    assert.equal(bad.success, false);
    assert.match(bad.stderr, /ZeroDivisionError/);
    const png = await sb.runCode("import matplotlib.pyplot as plt\nplt.plot([1,2])\nplt.show()", { timeout: 120 });
    assert.ok(png.richOutputs.some((o) => o.type === "image/png"), JSON.stringify(png.richOutputs.map((o) => o.type)));
  });
  await check("commands", async () => {
    const r = await sb.commands.run("echo $ROOMF_JS; exit 4");
    assert.equal(r.exit_code ?? r.exitCode, 4);
    assert.equal(r.stdout, "yes\n");
  });
  await check("background", async () => {
    const bg = await sb.runCodeBackground("import time; time.sleep(300)");
    const id = bg.process_id ?? bg.processId;
    assert.ok((await sb.listProcesses()).some((p) => p.process_id === id));
    await sb.killProcess(id);
  });
  await check("files", async () => {
    await sb.files.write("/workspace/js.txt", "from js");
    assert.equal(await sb.files.read("/workspace/js.txt"), "from js");
    const listed = await sb.files.list("/workspace");
    assert.ok(listed.some((f) => f.name === "js.txt"));
    assert.equal(await sb.files.exists("/workspace/js.txt"), true);
    await sb.files.remove("/workspace/js.txt");
    assert.equal(await sb.files.exists("/workspace/js.txt"), false);
    await assert.rejects(sb.files.read("/workspace/js.txt"), (e) => e instanceof FileNotFoundError);
  });
  await check("env", async () => {
    await sb.env.set("ROOMF_K", "v");
    assert.equal(await sb.env.get("ROOMF_K"), "v");
  });
  await check("metrics", async () => {
    const snap = await sb.getMetricsSnapshot();
    assert.ok(snap.total_requests > 0);
  });
  await check("stream", async () => {
    let out = "";
    for await (const m of sb.runCodeStream("for i in range(3): print(i)")) {
      if (m.type === "stdout") out += m.data;
    }
    assert.equal(out, "0\n1\n2\n");
  });
  await check("terminal", async () => {
    const ws = await sb.terminal.connect();
    sb.terminal.sendInput(ws, "echo JS-$((40+2))\n");
    let seen = "";
    for await (const m of sb.terminal.output(ws)) {
      seen += m.data ?? "";
      if (seen.includes("JS-42")) break;
    }
    ws.close();
  });
  await check("timeout", async () => {
    await sb.setTimeout(900);
    const left = await sb.getTimeToExpiry();
    assert.ok(left > 880 && left <= 900, String(left));
  });
  await check("pause_resume", async () => {
    await sb.pause();
    assert.equal((await sb.getInfo()).status, "paused");
    await sb.resume();
    assert.equal((await sb.getInfo()).status, "running");
    assert.equal((await sb.runCode("print('back')")).stdout, "back\n");
  });
  await check("connect_list", async () => {
    const again = await Sandbox.connect(sb.sandboxId, undefined, baseURL);
    assert.equal((await again.commands.run("echo c")).stdout, "c\n");
    const all = await Sandbox.list({ baseURL });
    assert.ok(all.some((s) => (s.sandboxId ?? s.id ?? s.sandbox_id) === sb.sandboxId));
  });
  await check("kill", async () => {
    await sb.kill();
    await assert.rejects(Sandbox.connect(sb.sandboxId, undefined, baseURL),
      (e) => e instanceof NotFoundError || e instanceof SandboxExpiredError);
    sb = undefined;
  });
  console.log(`PASSED ${done.length}`);
} finally {
  if (sb) await sb.kill().catch(() => {});
}
process.exit(0);  // open sockets of a stalled step must not keep node alive
