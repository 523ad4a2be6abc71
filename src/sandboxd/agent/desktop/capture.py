"""Pixels out of the display: PNG screenshots, screen recordings and OCR (ffmpeg x11grab, tesseract)."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from . import deps, proc, xshot
from .display import Display
from .errors import DesktopInvalid, DesktopNotAvailable, DesktopNotFound, DesktopToolFailed

GRAB = ["ffmpeg", "-nostdin", "-loglevel", "error", "-probesize", "32", "-analyzeduration", "0", "-f", "x11grab"]


async def _region(d: Display, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    sw, sh = await d.size()
    x, y, w, h = int(x), int(y), int(w), int(h)
    if w < 1 or h < 1 or x < 0 or y < 0 or x >= sw or y >= sh:
        raise DesktopInvalid(f"region {w}x{h}+{x}+{y} is outside the {sw}x{sh} screen")
    return x, y, min(w, sw - x), min(h, sh - y)  # clip to the screen instead of failing on the edge


async def screenshot(d: Display, region: tuple[int, int, int, int] | None = None, scale: int = 1) -> bytes:
    """Real PNG bytes of the whole screen or of a region (clipped to the screen)."""
    await d.ensure()
    x, y, w, h = await _region(d, *region) if region else (0, 0, *(await d.size()))
    if scale == 1:
        try:
            shot = await asyncio.to_thread(xshot.grab, d.number, (x, y, w, h))
        except OSError as e:
            proc.log(f"direct X screenshot failed ({e}); using ffmpeg")
            shot = None
        if shot:
            return shot
    argv = GRAB + ["-draw_mouse", "0", "-video_size", f"{w}x{h}", "-i", f"{d.name}+{x},{y}", "-frames:v", "1"]
    if scale != 1:
        argv += ["-vf", f"scale=iw*{scale}:ih*{scale}:flags=lanczos"]
    return (await proc.run(argv + ["-f", "image2pipe", "-vcodec", "png", "-"], d.env, timeout=20))[1]


# -- OCR --------------------------------------------------------------------------------------------

async def _tesseract(png: bytes, language: str, tsv: bool, env: dict) -> str:
    missing = deps.missing(deps.OCR)
    if missing:
        raise DesktopNotAvailable(missing, "OCR needs tesseract, which is not installed in this sandbox")
    language = language or "eng"
    _, langs, _ = await proc.run(["tesseract", "--list-langs"], env)
    have = {line.strip() for line in langs.decode().splitlines()[1:]}
    wanted = language.split("+")
    lacking = [f"tesseract-ocr-{lang}" for lang in wanted if lang not in have]
    if lacking:
        raise DesktopNotAvailable(lacking, f"OCR language data missing: {', '.join(lacking)}")
    argv = ["tesseract", "stdin", "stdout", "-l", language] + (["tsv"] if tsv else [])
    return (await proc.run(argv, env, data=png, timeout=60))[1].decode(errors="replace")


async def ocr(d: Display, region: tuple[int, int, int, int] | None, language: str = "eng") -> str:
    png = await screenshot(d, region, scale=2)  # screen text is ~12 px high: upscaling helps tesseract
    return (await _tesseract(png, language, False, d.env)).strip()


async def find_text(d: Display, text: str, language: str = "eng") -> dict | None:
    """Screen bounds of the first occurrence of `text` (one or more words), or None."""
    wanted = [w.lower() for w in str(text).split()]
    if not wanted:
        raise DesktopInvalid("text must not be empty")
    tsv = await _tesseract(await screenshot(d, None, scale=2), language, True, d.env)
    words = []
    for line in tsv.splitlines()[1:]:
        f = line.split("\t")
        if len(f) == 12 and f[0] == "5" and f[11].strip():
            words.append((f[11].strip(), [int(v) // 2 for v in f[6:10]], float(f[10])))
    n = len(wanted)
    for i in range(len(words) - n + 1):
        group = words[i:i + n]
        if all(wanted[k] in group[k][0].lower() for k in range(n)):
            x0 = min(g[1][0] for g in group)
            y0 = min(g[1][1] for g in group)
            x1 = max(g[1][0] + g[1][2] for g in group)
            y1 = max(g[1][1] + g[1][3] for g in group)
            return {"text": " ".join(g[0] for g in group), "x": x0, "y": y0, "width": x1 - x0,
                    "height": y1 - y0, "center_x": (x0 + x1) // 2, "center_y": (y0 + y1) // 2,
                    "confidence": round(sum(g[2] for g in group) / n, 1)}
    return None


# -- recording --------------------------------------------------------------------------------------

QUALITY_CRF = {"low": 35, "medium": 28, "high": 20}
QUALITY_BITRATE = {"low": "400k", "medium": "1M", "high": "3M"}


class Recording:
    def __init__(self, rid: str, path: Path, fmt: str, fps: int):
        self.id, self.path, self.format, self.fps = rid, path, fmt, fps
        self.process: asyncio.subprocess.Process | None = None
        self.start_time = time.time()
        self.end_time: float | None = None
        self.status = "recording"
        self.duration: float | None = None

    def info(self) -> dict:
        end = self.end_time or time.time()
        size = self.path.stat().st_size if self.path.exists() else 0
        return {"recording_id": self.id, "id": self.id, "status": self.status, "format": self.format,
                "fps": self.fps, "start_time": _iso(self.start_time),
                "end_time": _iso(self.end_time) if self.end_time else None,
                "duration": round(self.duration if self.duration is not None else end - self.start_time, 3),
                "file_path": str(self.path), "file_size": size}


class Recorder:
    def __init__(self, display: Display):
        self.d = display
        self.recordings: dict[str, Recording] = {}

    async def start(self, fps: int = 10, fmt: str = "mp4", quality: str = "medium",
                    output_file: str | None = None) -> dict:
        if output_file and not fmt:
            fmt = Path(output_file).suffix.lstrip(".")
        fmt = (fmt or "mp4").lower()
        if fmt not in ("mp4", "webm"):
            raise DesktopInvalid("format must be mp4 or webm")
        fps = max(1, min(int(fps or 10), 60))
        if quality not in QUALITY_CRF:
            quality = "medium"
        await self.d.ensure()
        w, h = await self.d.size()
        rid = "rec_" + uuid.uuid4().hex[:12]
        path = Path(output_file) if output_file else self.d.dir / "recordings" / f"{rid}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        even = "scale=trunc(iw/2)*2:trunc(ih/2)*2"
        if fmt == "mp4":
            codec = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", str(QUALITY_CRF[quality]),
                     "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
        else:
            codec = ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
                     "-b:v", QUALITY_BITRATE[quality], "-pix_fmt", "yuv420p"]
        progress = self.d.dir / f"{rid}.progress"
        argv = ["ffmpeg", "-loglevel", "error", "-y", "-progress", str(progress), "-stats_period", "0.25",
                "-f", "x11grab", "-draw_mouse", "1", "-framerate", str(fps),
                "-video_size", f"{w}x{h}", "-i", f"{self.d.name}+0,0", "-vf", even] + codec + [str(path)]
        rec = Recording(rid, path, fmt, fps)
        # stdin is a pipe: "q" on it makes ffmpeg finish the file properly (moov atom, webm cues).
        try:
            rec.process = await proc.spawn(argv, self.d.env, str(self.d.dir / f"{rid}.log"),
                                           stdin=asyncio.subprocess.PIPE)
        except OSError as e:
            raise DesktopToolFailed(f"ffmpeg: {e}") from e
        self.recordings[rid] = rec
        await self._first_frame(rec, progress)
        rec.start_time = time.time()
        proc.log(f"recording {rid} started: {path}")
        return rec.info()

    async def _first_frame(self, rec: Recording, progress: Path) -> None:
        """Return once ffmpeg has encoded a frame. On a loaded host its start (x11grab probe, encoder set-up)
        can take seconds; a "q" sent before the first frame leaves a file of zero length in time, so the
        recording the caller asked for begins here, not at the spawn."""
        p = rec.process
        assert p is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if p.returncode is not None:
                rec.status, rec.end_time = "failed", time.time()
                raise DesktopToolFailed(f"ffmpeg exited {p.returncode} before the first frame",
                                        details={"recording_id": rec.id})
            try:
                frames = [ln for ln in progress.read_text().splitlines() if ln.startswith("frame=")]
            except OSError:
                frames = []
            if frames and frames[-1][6:].strip() not in ("", "0"):
                return
            await asyncio.sleep(0.05)
        proc.log(f"recording {rec.id}: no frame after 20 s; recording on regardless")

    def get(self, rid: str | None) -> Recording:
        if not rid:  # the JS SDK stops/queries without an id: the most recent recording
            if not self.recordings:
                raise DesktopNotFound("no recording has been started")
            return list(self.recordings.values())[-1]
        rec = self.recordings.get(rid)
        if rec is None:
            raise DesktopNotFound(f"no recording {rid}", details={"recording_id": rid})
        return rec

    async def stop(self, rid: str | None) -> dict:
        rec = self.get(rid)
        p = rec.process
        if rec.status == "recording" and p is not None:
            rec.end_time = time.time()
            stdin = p.stdin
            assert stdin is not None  # ffmpeg is spawned with a stdin pipe
            try:
                stdin.write(b"q")
                await stdin.drain()
                stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(p.wait(), 15)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()
            (self.d.dir / f"{rec.id}.progress").unlink(missing_ok=True)
            ok = p.returncode == 0 and rec.path.exists() and rec.path.stat().st_size > 0
            rec.status = "stopped" if ok else "failed"
            rec.duration = await self._probe(rec.path) if ok else None
            if not ok:
                proc.log(f"recording {rec.id} failed: ffmpeg exit {p.returncode}")
        return rec.info()

    async def _probe(self, path: Path) -> float | None:
        code, out, _ = await proc.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                       "-of", "csv=p=0", str(path)], self.d.env, check=False)
        try:
            return float(out.decode().strip()) if code == 0 else None
        except ValueError:
            return None

    def status(self, rid: str | None) -> dict:
        rec = self.get(rid)
        if rec.status == "recording" and rec.process is not None and rec.process.returncode is not None:
            rec.status, rec.end_time = "failed", time.time()  # ffmpeg died on its own
        return rec.info()

    def file(self, rid: str | None) -> Recording:
        rec = self.get(rid)
        if rec.status != "stopped":
            raise DesktopInvalid(f"recording {rec.id} is {rec.status}; stop it before downloading")
        return rec

    async def stop_all(self) -> None:
        for rec in list(self.recordings.values()):
            if rec.status == "recording":
                await self.stop(rec.id)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
