"""A Dockerfile → the HopX build API's steps, with Docker's semantics (docs/templates.md, "Dockerfiles").

dockerfile-parse splits the file into instructions (continuations, comments, line numbers); the meaning of
each is here. Variables (ARG, ENV) are substituted where Docker substitutes them; a variable this file does
not define is the base image's, left for the server to fill in ENV values (`expand`) and empty elsewhere.
Stages are numbered: FROM/COPY --from name them on the wire by number (`fromStage`), an unknown name is a
template (`fromImage`).
"""
from __future__ import annotations

import io
import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter

from ._errors import InvalidRequestError

DEFAULT_SHELL = ["/bin/sh", "-c"]
IGNORED = {"LABEL", "EXPOSE", "MAINTAINER"}  # accepted: no effect on a template
REFUSED = {"ONBUILD": "ONBUILD has no meaning for a template (nothing builds FROM it with triggers)",
           "STOPSIGNAL": "STOPSIGNAL is not supported (sandboxes stop with SIGTERM then SIGKILL)",
           "VOLUME": "VOLUME is not supported (a sandbox's filesystem is one writable overlay)"}
VAR_RE = re.compile(r"\\\$|\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")


@dataclass
class Copy:
    step: dict[str, Any]
    sources: list[str]  # relative to the build directory, uploaded before the build


@dataclass
class Stage:
    name: str | None
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    env: dict[str, str] = field(default_factory=dict)  # known values, for substitution
    args: dict[str, str] = field(default_factory=dict)
    cmd: list[str] | None = None
    cmd_inherited: bool = False  # from the stage this one continues: an ENTRYPOINT here drops it
    entrypoint: list[str] | None = None
    entry_shell: bool = False
    ready: dict[str, Any] | None = None
    ready_set: bool = False


@dataclass
class Recipe:
    from_image: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    start_cmd: str | None = None
    ready_cmd: dict[str, Any] | None = None


def substitute(text: str, known: dict[str, str], keep_unknown: bool = False) -> str:
    """Docker's $NAME, ${NAME}, ${NAME:-word}, ${NAME:+word} and \\$. keep_unknown: a name not in known
    stays as ${NAME} and \\$ stays escaped, for the server to expand against the image env."""
    def one(m: re.Match) -> str:
        if m.group(0) == "\\$":
            return "\\$" if keep_unknown else "$"
        name = m.group(1) or m.group(4)
        if m.group(2) == "-":
            return known.get(name) or substitute(m.group(3), known)
        if m.group(2) == "+":
            return substitute(m.group(3), known) if known.get(name) else ""
        if name in known:
            value = known[name]
            return value.replace("$", "\\$") if keep_unknown else value
        return "${" + name + "}" if keep_unknown else ""
    return VAR_RE.sub(one, text)


def _json_form(value: str) -> list[str] | None:
    if not value.lstrip().startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return [str(a) for a in parsed] if isinstance(parsed, list) else None


def _flags(value: str, allowed: set[str], where: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = value.lstrip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, val = word[2:].partition("=")
        if key not in allowed:
            raise InvalidRequestError(f"{where}: unsupported flag --{key}")
        flags[key] = val
        rest = rest.lstrip()
    return flags, rest


def _argv(value: str, stage: Stage) -> tuple[list[str], bool]:
    """(argv, was shell form) of RUN/CMD/ENTRYPOINT: exec form as written, shell form under SHELL."""
    exec_form = _json_form(value)
    if exec_form is not None:
        return exec_form, False
    return [*stage.shell, value.strip()], True


def _start_cmd(stage: Stage) -> str | None:
    """Docker's ENTRYPOINT/CMD rules; the server runs the result with /bin/sh -c."""
    if stage.entrypoint is not None:
        argv = stage.entrypoint if stage.entry_shell else stage.entrypoint + (stage.cmd or [])
    else:
        argv = stage.cmd or []
    if not argv:
        return None
    if len(argv) == 3 and argv[:2] == DEFAULT_SHELL:
        return argv[2]
    return shlex.join(argv)


class Translator:
    def __init__(self, text: str, build_args: dict[str, str] | None):
        self.parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
        self.build_args = dict(build_args or {})
        self.global_args: dict[str, str] = {}
        self.stages: list[Stage] = []
        self.names: dict[str, int] = {}
        self.recipe: Recipe | None = None

    def run(self) -> Recipe:
        for ins in self.parser.structure:
            op, value, line = ins["instruction"].upper(), ins["value"], ins["startline"] + 1
            where = f"Dockerfile line {line} ({op})"
            if op == "COMMENT":
                continue
            if op == "FROM":
                self._from(value, line, where)
            elif op == "ARG":
                scope = self.stages[-1].args if self.stages else self.global_args
                self._arg(value, scope, self._known(self.stages[-1]) if self.stages else {}, where)
            elif self.recipe is None:
                raise InvalidRequestError(f"{where}: the first instruction must be FROM (or ARG)")
            elif op in REFUSED:
                raise InvalidRequestError(f"{where}: {REFUSED[op]}")
            elif op in IGNORED:
                continue
            else:
                handler = getattr(self, f"_{op.lower()}", None)
                if handler is None:
                    raise InvalidRequestError(f"{where}: unknown instruction {op}")
                handler(value, line, where, self.stages[-1])
        if self.recipe is None:
            raise InvalidRequestError("the Dockerfile is empty: it needs at least FROM")
        if not self.recipe.steps:  # the API wants a step: FROM the one stage again, which does nothing
            self.recipe.steps.append({"type": "FROM", "fromStage": 0})
        last = self.stages[-1]
        self.recipe.start_cmd = _start_cmd(last)
        self.recipe.ready_cmd = last.ready
        return self.recipe

    def _known(self, stage: Stage) -> dict[str, str]:
        return {**stage.args, **stage.env}

    def _step(self, line: int, **step: Any) -> dict[str, Any]:
        assert self.recipe is not None
        step["line"] = line
        self.recipe.steps.append(step)
        return step

    # ---- instructions ------------------------------------------------------------------------------
    def _from(self, value: str, line: int, where: str) -> None:
        words = _flags(value, {"platform"}, where)[1].split()  # --platform: there is one, the host's
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
            raise InvalidRequestError(f"{where}: expected FROM image [AS name]")
        image = substitute(words[0], self.global_args)
        name = words[2].lower() if len(words) == 3 else None
        parent = self.names.get(image.lower())
        stage = Stage(name=name)
        if parent is not None:
            src = self.stages[parent]
            stage = Stage(name=name, shell=list(src.shell), env=dict(src.env), cmd=src.cmd, cmd_inherited=True,
                          entrypoint=src.entrypoint, entry_shell=src.entry_shell, ready=src.ready)
        if self.recipe is None:
            if parent is not None:
                raise InvalidRequestError(f"{where}: the first stage cannot be FROM a stage")
            self.recipe = Recipe(from_image=image)
        elif parent is not None:
            self._step(line, type="FROM", fromStage=parent)
        else:
            self._step(line, type="FROM", args=[image])
        if name:
            self.names[name] = len(self.stages)
        self.stages.append(stage)

    def _arg(self, value: str, scope: dict[str, str], known: dict[str, str], where: str) -> None:
        for word in list(WordSplitter(value).split(dequote=False)):
            name, eq, default = word.partition("=")
            if not re.fullmatch(r"\w+", name):
                raise InvalidRequestError(f"{where}: invalid ARG name {name!r}")
            if name in self.build_args:
                scope[name] = self.build_args[name]
            elif eq:
                scope[name] = substitute(WordSplitter(default).dequote(), known)
            elif name in self.global_args and scope is not self.global_args:
                scope[name] = self.global_args[name]  # ARG NAME after FROM reuses the global default

    def _env(self, value: str, line: int, where: str, stage: Stage) -> None:
        pairs = _pairs(value)
        if not pairs:
            raise InvalidRequestError(f"{where}: expected ENV NAME=value")
        for name, raw in pairs:
            known = self._known(stage)
            for_server = substitute(raw, known, keep_unknown=True)
            if for_server == substitute(raw, known):
                stage.env[name] = for_server
            else:  # it uses the base image's env: known to the server only
                stage.env.pop(name, None)
            self._step(line, type="ENV", args=[name, for_server], expand=True)

    def _run(self, value: str, line: int, where: str, stage: Stage) -> None:
        argv, shell_form = _argv(value, stage)
        exports = {k: v for k, v in stage.args.items() if k not in stage.env}
        if shell_form and exports:  # ARG values are the command's environment, not the image's
            prefix = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(exports.items()))
            argv = [*argv[:-1], prefix + argv[-1]]
        if shell_form and stage.shell == DEFAULT_SHELL:
            self._step(line, type="RUN", args=[argv[-1]])
        else:
            self._step(line, type="RUN", args=argv, exec=True)

    def _cmd(self, value: str, line: int, where: str, stage: Stage) -> None:
        stage.cmd, stage.cmd_inherited = _argv(value, stage)[0], False

    def _entrypoint(self, value: str, line: int, where: str, stage: Stage) -> None:
        stage.entrypoint, stage.entry_shell = _argv(value, stage)
        if stage.cmd_inherited:  # Docker: ENTRYPOINT resets a CMD of the base image, not one of this stage
            stage.cmd, stage.cmd_inherited = None, False

    def _shell(self, value: str, line: int, where: str, stage: Stage) -> None:
        shell = _json_form(value)
        if not shell:
            raise InvalidRequestError(f"{where}: SHELL takes the JSON form, e.g. [\"/bin/bash\", \"-c\"]")
        stage.shell = shell

    def _user(self, value: str, line: int, where: str, stage: Stage) -> None:
        self._step(line, type="USER", args=[substitute(value.strip(), self._known(stage))])

    def _workdir(self, value: str, line: int, where: str, stage: Stage) -> None:
        self._step(line, type="WORKDIR", args=[substitute(value.strip(), self._known(stage))])

    def _healthcheck(self, value: str, line: int, where: str, stage: Stage) -> None:
        flags, rest = _flags(value, {"interval", "timeout", "start-period", "start-interval", "retries"}, where)
        kind, _, command = rest.partition(" ")
        if kind.upper() == "NONE":
            stage.ready = None
            return
        if kind.upper() != "CMD" or not command.strip():
            raise InvalidRequestError(f"{where}: expected HEALTHCHECK [options] CMD command, or HEALTHCHECK NONE")
        argv, _ = _argv(command, stage)
        text = argv[2] if len(argv) == 3 and argv[:2] == DEFAULT_SHELL else shlex.join(argv)
        ready: dict[str, Any] = {"type": "command", "command": text}
        if flags.get("start-period") or flags.get("timeout"):
            ready["timeout"] = int(_seconds(flags.get("start-period") or flags["timeout"], where) * 1000)
        stage.ready = ready

    def _copy(self, value: str, line: int, where: str, stage: Stage, add: bool = False) -> None:
        allowed = {"chown", "chmod"} | ({"checksum"} if add else {"from", "link"})
        flags, rest = _flags(value, allowed, where)
        if "checksum" in flags:
            raise InvalidRequestError(f"{where}: ADD --checksum is not supported")
        parts = _json_form(rest) or list(WordSplitter(rest).split())
        parts = [substitute(p, self._known(stage)) for p in parts]
        if len(parts) < 2:
            raise InvalidRequestError(f"{where}: needs a source and a destination")
        sources, dest = parts[:-1], parts[-1]
        step: dict[str, Any] = {"type": "COPY", "args": [",".join(sources), dest]}
        if flags.get("chown"):
            step["owner"] = substitute(flags["chown"], self._known(stage))
        if flags.get("chmod"):
            if not re.fullmatch(r"[0-7]{3,4}", flags["chmod"]):
                raise InvalidRequestError(f"{where}: --chmod takes an octal mode")
            step["permissions"] = flags["chmod"]
        urls = [s for s in sources if re.match(r"^[a-z]+://", s)]
        if urls:
            if not add or len(sources) != 1 or not sources[0].startswith(("http://", "https://")):
                raise InvalidRequestError(f"{where}: only ADD takes a URL, one http(s) URL per instruction")
            self._fetch(sources[0], dest, step, line, stage)
            return
        if flags.get("from") is not None:
            ref = substitute(flags["from"], self._known(stage))
            index = self.names.get(ref.lower())
            if index is None and ref.isdigit() and int(ref) < len(self.stages) - 1:
                index = int(ref)
            step.update({"fromStage": index} if index is not None else {"fromImage": ref})
            self._step(line, **step)
            return
        if add:
            step["extract"] = True
        assert self.recipe is not None  # a COPY is refused before the first FROM
        self.recipe.copies.append(Copy(self._step(line, **step), sources))

    def _add(self, value: str, line: int, where: str, stage: Stage) -> None:
        self._copy(value, line, where, stage, add=True)

    def _fetch(self, url: str, dest: str, step: dict[str, Any], line: int, stage: Stage) -> None:
        """ADD <url>: downloaded by a RUN in the build sandbox (its egress rules apply), as root, mode 600
        unless --chmod, then --chown; a failure names the line."""
        if dest.endswith("/"):
            dest += posixpath.basename(url.split("?", 1)[0].rstrip("/")) or "index.html"
        q, u = shlex.quote(dest), shlex.quote(url)
        script = (f"set -e; mkdir -p \"$(dirname {q})\"; "
                  f"if command -v curl >/dev/null 2>&1; then curl -fsSL -o {q} {u}; "
                  f"elif command -v wget >/dev/null 2>&1; then wget -q -O {q} {u}; "
                  f"else python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])'"
                  f" {u} {q}; fi; chmod {step.get('permissions', '600')} {q}")
        if step.get("owner"):
            script += f"; chown {shlex.quote(step['owner'])} {q}"
        self._step(line, type="RUN", args=[script], user="root")


def _unquote(word: str) -> str:
    """A word without its quotes and escapes, except \\$ (and $ in single quotes) kept as \\$: a literal
    dollar for substitute()."""
    out, quote, i = [], None, 0
    while i < len(word):
        c = word[i]
        if c == quote:
            quote = None
        elif quote is None and c in "'\"":
            quote = c
        elif c == "$" and quote == "'":
            out.append("\\$")
        elif c == "\\" and quote != "'" and i + 1 < len(word):
            i += 1
            out.append("\\$" if word[i] == "$" else word[i])
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _pairs(value: str) -> list[tuple[str, str]]:
    """ENV/LABEL's NAME=value ... or its older NAME value form."""
    words = list(WordSplitter(value).split(dequote=False))
    if words and "=" not in words[0]:
        name, _, rest = value.strip().partition(" ")
        return [(name, _unquote(rest.strip()))]
    return [(w.split("=", 1)[0], _unquote(w.split("=", 1)[1])) for w in words if "=" in w]


def _seconds(text: str, where: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text)
    if not m:
        raise InvalidRequestError(f"{where}: invalid duration {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_dockerfile(text: str, build_args: dict[str, str] | None = None) -> Recipe:
    """Translate a Dockerfile; anything unsupported is an error naming its line and instruction."""
    return Translator(text, build_args).run()
