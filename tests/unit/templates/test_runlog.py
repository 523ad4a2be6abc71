"""Following a RUN step's output file in the sandbox's upper dir, without trusting that file."""
import os

from sandboxd.templates import runlog


def test_follows_lines_across_polls(tmp_path):
    got = []
    path = tmp_path / runlog.LOG_NAME
    f = runlog.LogFollower(path, got.append)
    f.poll()  # not created yet: nothing, no error
    path.write_bytes(b"one\ntw")
    f.poll()
    assert got == ["one"]
    with open(path, "ab") as fh:
        fh.write(b"o\r\nthree")
    f.poll()
    f.finish()
    assert got == ["one", "two", "three"] and f.tail.endswith("three")


def test_symlink_and_fifo_are_not_followed(tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("root:$6$hash\n")
    got = []
    link = tmp_path / "link" / runlog.LOG_NAME
    link.parent.mkdir()
    link.symlink_to(secret)  # what a hostile RUN could leave in its upper dir
    runlog.LogFollower(link, got.append).finish()
    fifo = tmp_path / "fifo" / runlog.LOG_NAME
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    runlog.LogFollower(fifo, got.append).finish()  # must not block
    assert got == []


def test_output_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "MAX_BYTES", 10)
    path = tmp_path / runlog.LOG_NAME
    path.write_bytes(b"123456789\n123456789\n")
    got = []
    f = runlog.LogFollower(path, got.append)
    f.poll()
    f.poll()
    assert got == ["123456789", "(output truncated at 10 bytes)"]


def test_wrap_redirects_before_the_command():
    argv = runlog.wrap("echo hi; exit 3")
    assert argv[:2] == ["/bin/sh", "-c"] and argv[2].startswith(f"exec >>{runlog.IN_SANDBOX} 2>&1\n")
