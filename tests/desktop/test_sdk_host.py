"""The official hopx-ai SDK's desktop API against the real desktop endpoints on a real X display.

Everything is real: Xvnc + openbox on a private display, xdotool, xclip, ffmpeg, tesseract; the SDK
talks HTTP to uvicorn serving the same ASGI app the agent mounts.
"""
from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from sandboxd.agent.desktop import deps

from .conftest import need
from support.waiting import wait_for

TK_APP = Path(__file__).with_name("tk_app.py")




def png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture
def tk_app(display_env, tmp_path):
    need({"python3": "python3", **deps.CORE})
    if subprocess.run(["/usr/bin/python3", "-c", "import tkinter"], capture_output=True).returncode:
        pytest.skip("python3-tk is not installed on the host")
    out = tmp_path / "tk.out"
    p = subprocess.Popen(["/usr/bin/python3", str(TK_APP), str(out)], env=display_env)
    geom = Path(str(out) + ".geom")
    wait_for(geom.exists)
    time.sleep(0.3)
    yield p, out, json.loads(geom.read_text())
    p.kill()
    p.wait()


def test_display_vnc_and_screenshot(sdk_sandbox):
    d = sdk_sandbox.desktop
    vnc = d.start_vnc(password="h-secret")
    assert vnc.url.endswith("/desktop/vnc/websocket")
    status = d.get_vnc_status()
    assert status.display is not None
    info = d.get_display()
    assert info.width >= 640 and info.height >= 480
    shot = png(d.screenshot())
    assert shot.size == (info.width, info.height)
    region = png(d.screenshot_region(5, 7, 120, 80))
    assert region.size == (120, 80)


def test_terminal_typing_changes_the_window(sdk_sandbox, display_env, tmp_path):
    need({"xterm": "xterm"})
    d = sdk_sandbox.desktop
    marker = tmp_path / "typed.txt"
    term = subprocess.Popen(["xterm", "-title", "sbx-term", "-geometry", "80x20+40+40"], env=display_env)
    try:
        win = wait_for(lambda: next((w for w in d.get_windows() if w.title == "sbx-term"), None))
        assert isinstance(win.id, int)
        d.focus_window(win.id)
        time.sleep(0.3)
        before = png(d.screenshot())
        d.type(f"echo SBX_$((6*7)) > {marker}")
        d.press("Enter")
        assert wait_for(lambda: marker.exists() and marker.read_text().strip() == "SBX_42")
        after = png(d.screenshot())
        box = (win.x, win.y, win.x + win.width, win.y + win.height)
        changed = ImageChops.difference(before.crop(box), after.crop(box)).getbbox()
        assert changed is not None, "the terminal window region did not change"
        outside = ImageChops.difference(before.crop((0, 0, 30, 30)), after.crop((0, 0, 30, 30))).getbbox()
        assert outside is None, "pixels far from the window changed"
        shot = png(d.capture_window(win.id))
        assert abs(shot.size[0] - win.width) <= 4 and abs(shot.size[1] - win.height) <= 4
    finally:
        term.kill()
        term.wait()


def test_tk_page_clicks_and_keys(sdk_sandbox, tk_app):
    _, out, geo = tk_app
    d = sdk_sandbox.desktop
    ex, ey, ew, eh = geo["entry"]
    d.click(ex + 20, ey + eh // 2)
    d.type("hello tk")
    bx, by, bw, bh = geo["button"]
    d.click(bx + bw // 2, by + bh // 2)
    assert wait_for(lambda: out.exists() and out.read_text().splitlines() == ["hello tk"])
    # Keys: select all, replace, submit with Enter.
    d.click(ex + 20, ey + eh // 2)
    d.combination(["ctrl"], "a")  # Tk's entry: ctrl+a moves to the line start
    d.press("End")
    d.press("BackSpace")
    d.press("BackSpace")
    d.type("!")
    d.press("enter")
    assert wait_for(lambda: out.read_text().splitlines() == ["hello tk", "hello !"])
    lx, ly, lw, lh = geo["label"]
    d.click(lx + lw // 2, ly + lh // 2, clicks=2)
    assert wait_for(lambda: out.read_text().splitlines()[-1:] == ["double"], what="the double click")
    d.hotkey(["shift"], "Home")  # X11 helper spelling of a chord reaches the app too
    wins = {w.title: w for w in d.get_windows()}
    assert "sbx-tk" in wins


def test_windows_focus_resize_minimize_close(sdk_sandbox, tk_app):
    proc, _, _ = tk_app
    d = sdk_sandbox.desktop
    win = wait_for(lambda: next((w for w in d.get_windows() if w.title == "sbx-tk"), None))
    d.focus_window(win.id)
    raw = sdk_sandbox.desktop._client.get("/desktop/windows", operation="raw windows").json()["windows"]
    assert next(w for w in raw if w["id"] == win.id)["is_active"] is True
    d.resize_window(win.id, 500, 300)
    resized = wait_for(lambda: next((w for w in d.get_windows()
                                     if w.id == win.id and (w.width, w.height) == (500, 300)), None))
    assert resized
    d.minimize_window(win.id)
    d.minimize_window(win.id)  # already minimized: still answers
    raw = sdk_sandbox.desktop._client.get("/desktop/windows", operation="raw windows").json()["windows"]
    assert next(w for w in raw if w["id"] == win.id)["is_minimized"] is True
    d.focus_window(str(hex(win.id)))  # hex string ids are accepted too; focusing restores it
    d.close_window(win.id)
    assert wait_for(lambda: proc.poll() is not None, timeout=5), "WM_DELETE did not close the Tk app"
    assert all(w.id != win.id for w in d.get_windows())


def test_clipboard_get_set_history(sdk_sandbox):
    d = sdk_sandbox.desktop
    d.set_clipboard("first ✓")
    d.set_clipboard("second")
    assert d.get_clipboard() == "second"
    history = d.get_clipboard_history()
    assert history[:2] == ["second", "first ✓"]


def test_mouse_move_drag_scroll(sdk_sandbox, display_env):
    d = sdk_sandbox.desktop
    d.move(321, 123)
    loc = subprocess.run(["xdotool", "getmouselocation", "--shell"], env=display_env, capture_output=True,
                         text=True).stdout
    assert "X=321" in loc and "Y=123" in loc
    d.click(321, 123)
    d.click(321, 123)  # the pointer is already there: must not wait for it to move
    d.drag(10, 10, 200, 150)
    d.scroll(2, "up")
    loc = subprocess.run(["xdotool", "getmouselocation", "--shell"], env=display_env, capture_output=True,
                         text=True).stdout
    assert "X=200" in loc and "Y=150" in loc


def test_set_resolution_keeps_windows(sdk_sandbox, tk_app):
    d = sdk_sandbox.desktop
    original = d.get_display()
    sizes = d.get_available_resolutions()
    assert (1024, 768) in sizes
    try:
        info = d.set_resolution(1100, 700)  # not a predefined mode: added at run time
        assert (info.width, info.height) == (1100, 700)
        assert png(d.screenshot()).size == (1100, 700)
        assert any(w.title == "sbx-tk" for w in d.get_windows())
    finally:
        d.set_resolution(original.width, original.height)


@pytest.mark.parametrize("fmt,codec", [("mp4", "h264"), ("webm", "vp8")])
def test_recording_decodes_with_the_right_duration(sdk_sandbox, tmp_path, fmt, codec):
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe missing")
    d = sdk_sandbox.desktop
    asked = time.monotonic()
    rec = d.start_recording(fps=10, format=fmt)
    started = time.monotonic()
    assert rec.status.value == "recording"
    time.sleep(3)
    assert d.get_recording_status(rec.recording_id).status.value == "recording"
    stopping = time.monotonic()
    stopped = d.stop_recording(rec.recording_id)
    ended = time.monotonic()
    assert stopped.status.value == "stopped" and stopped.file_size > 0
    data = d.download_recording(rec.recording_id)
    assert len(data) == stopped.file_size
    path = tmp_path / f"rec.{fmt}"
    path.write_bytes(data)
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout)
    assert probe["streams"][0]["codec_name"] == codec
    # What was asked, read against the clock: at least the time between the start's answer and the stop
    # (less one progress period and a frame), at most the time from asking to start until the stop answered
    # (on a loaded host either call can take a second).
    duration = float(probe["format"]["duration"])
    assert stopping - started - 0.75 < duration < ended - asked + 0.5, (duration, started - asked, ended - stopping)
    # decodes to the end without errors
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True)
    assert decoded.returncode == 0 and not decoded.stderr


def test_ocr_find_and_bounds(sdk_sandbox, tk_app):
    need(deps.OCR)
    _, _, geo = tk_app
    d = sdk_sandbox.desktop
    lx, ly, lw, lh = geo["label"]
    text = d.ocr(lx, ly, lw, lh)
    assert "SANDBOXD" in text and "42" in text
    el = d.find_element("OCR 42")
    assert el and lx - 5 <= el["x"] <= lx + lw and ly - 5 <= el["y"] <= ly + lh
    bounds = d.get_bounds("SANDBOXD")
    assert bounds["found"] is True and bounds["width"] > 20
    assert d.find_element("no-such-words-here") is None
    assert d.wait_for("SANDBOXD", timeout=5)["text"].startswith("SANDBOXD")


def test_debug_endpoints(sdk_sandbox):
    d = sdk_sandbox.desktop
    names = {p["name"] for p in d.get_debug_processes()}
    assert {"Xvnc", "openbox"} <= names
    assert any("Xvnc" in line for line in d.get_debug_logs())


async def _bridge(ws_url: str, headers: dict) -> asyncio.AbstractServer:
    """TCP -> WebSocket relay, as a VNC viewer next to the user would use (websockify reversed)."""
    import websockets

    async def client(reader, writer):
        async with websockets.connect(ws_url, subprotocols=["binary"], additional_headers=headers,
                                      max_size=None) as ws:
            async def up():
                while data := await reader.read(65536):
                    await ws.send(data)
                await ws.close()

            async def down():
                async for msg in ws:
                    writer.write(msg if isinstance(msg, bytes) else msg.encode())
                    await writer.drain()
                writer.close()

            await asyncio.gather(up(), down(), return_exceptions=True)

    # vncsnapshot takes a display number (port 5900+N), so listen on a free port above 5900.
    for port in range(6150, 6250):
        try:
            return await asyncio.start_server(client, "127.0.0.1", port)
        except OSError:
            continue
    raise RuntimeError("no free port for the VNC bridge")


async def test_vnc_client_through_websocket_tunnel(sdk_sandbox, tmp_path):
    need({"vncsnapshot": "vncsnapshot"})
    d = sdk_sandbox.desktop
    await asyncio.to_thread(d.start_vnc, password="tunnel12")
    url = (await asyncio.to_thread(d.get_vnc_status)).url
    server = await _bridge(url, {"Authorization": "Bearer test-token"})
    port = server.sockets[0].getsockname()[1]
    try:
        for password, should_work in (("tunnel12", True), ("wrongpwd", False)):
            pwfile = tmp_path / f"pw-{password}"
            pwfile.write_bytes(subprocess.run(["vncpasswd", "-f"], input=password.encode(),
                                              capture_output=True, check=True).stdout)
            out = tmp_path / f"snap-{password}.jpg"
            p = await asyncio.create_subprocess_exec(
                "vncsnapshot", "-quiet", "-encodings", "raw", "-passwd", str(pwfile), f"127.0.0.1:{port - 5900}", str(out),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await asyncio.wait_for(p.communicate(), 30)
            if should_work:
                assert p.returncode == 0 and out.exists()
                info = await asyncio.to_thread(d.get_display)
                assert Image.open(out).size == (info.width, info.height)
            else:
                assert p.returncode != 0 and not out.exists()
        await asyncio.to_thread(d.stop_vnc)
        assert (await asyncio.to_thread(d.get_vnc_status)).display is not None
    finally:
        server.close()


def test_direct_x_grab_matches_ffmpeg(sdk_sandbox, desktop_agent, display_env):
    """Screenshots come from one X GetImage (xshot); they must be the pixels ffmpeg's x11grab sees."""
    from sandboxd.agent.desktop import xshot

    d = sdk_sandbox.desktop
    info = d.get_display()
    served = png(d.screenshot_region(0, 0, 400, 300))
    direct = png(xshot.grab(desktop_agent.display, (0, 0, 400, 300)))
    ref = png(subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "x11grab", "-draw_mouse", "0", "-video_size", "400x300",
         "-i", f":{desktop_agent.display}+0,0", "-frames:v", "1", "-f", "image2pipe", "-vcodec", "png", "-"],
        env=display_env, capture_output=True, check=True).stdout)
    assert ImageChops.difference(direct, ref).getbbox() is None
    assert served.size == (400, 300) and info.width >= 400
