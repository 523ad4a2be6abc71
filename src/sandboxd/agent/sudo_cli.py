#!/opt/sandboxd/venv/bin/python -I
"""`sudo` in a sandbox (bound at /usr/local/bin/sudo): asks the agent to run the command (agent/sudo.py).

Takes the options scripts use: -u USER, -E / --preserve-env, -H, -n, -S, -i, -s, -k, and `--`. There is no
password to ask for. Standalone (the standard library only): it runs on the image's agent interpreter,
without the agent's package on its path.
"""
import array
import json
import os
import signal
import socket
import sys

SOCKET = "/run/sandboxd/sudo.sock"
USAGE = "usage: sudo [-EHkns] [-i | -s] [-u user] [--] [command [arg ...]]"


def parse(args: list[str]) -> dict:
    request: dict = {"user": "root", "preserve_env": False, "login": False, "shell": False}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            name, _, value = a[2:].partition("=")
            if name == "user":
                request["user"] = value or args[i + 1]
                i += 0 if value else 1
            elif name == "preserve-env":
                request["preserve_env"] = True
            elif name in ("login", "shell"):
                request[name] = True
            elif name not in ("non-interactive", "stdin", "set-home", "reset-timestamp"):
                sys.exit(f"sudo: unrecognized option '{a}'\n{USAGE}")
            i += 1
            continue
        letters = a[1:]
        for j, c in enumerate(letters):
            if c == "u":
                rest = letters[j + 1:]
                if not rest and i + 1 >= len(args):
                    sys.exit(f"sudo: option requires an argument -- 'u'\n{USAGE}")
                request["user"] = rest or args[i + 1]
                i += 0 if rest else 1
                break
            if c == "E":
                request["preserve_env"] = True
            elif c == "i":
                request["login"] = True
            elif c == "s":
                request["shell"] = True
            elif c not in "HnSkV":
                sys.exit(f"sudo: invalid option -- '{c}'\n{USAGE}")
        i += 1
    command = args[i:]
    if request["user"].startswith("#") and request["user"][1:].isdigit():
        request["user"] = request["user"][1:]
    if request["login"] or request["shell"]:
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        login = ["-l"] if request["login"] else []
        command = [shell, *login, "-c", " ".join(command)] if command else [shell, *login]
    elif not command:
        sys.exit(USAGE)
    request["argv"] = command
    return request


def main() -> int:
    request = parse(sys.argv[1:])
    request["env"] = dict(os.environ)
    request["cwd"] = None if request["login"] else os.getcwd()  # a login shell starts at the user's home
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET)
    except OSError as e:
        print(f"sudo: the sandbox's agent does not answer ({e.strerror})", file=sys.stderr)
        return 1
    sock.sendmsg([json.dumps(request).encode() + b"\n"],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])

    def forward(sig, _frame):
        try:
            sock.sendall(json.dumps({"signal": sig}).encode() + b"\n")
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    answer = b""
    while not answer.endswith(b"\n"):
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            print("sudo: the sandbox's agent went away", file=sys.stderr)
            return 1
        answer += chunk
    result = json.loads(answer)
    if result.get("error"):
        print(result["error"], file=sys.stderr)
    return int(result.get("exit", 1))


if __name__ == "__main__":
    sys.exit(main())
