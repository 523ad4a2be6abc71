"""The build engine: FROM + RUN/COPY/ENV/WORKDIR/USER steps → a named image made of cached layers. FROM
steps begin further stages (a multi-stage build); only the last one is saved as the image.

Every layer is keyed by a content hash of (parent key, step, build state, COPY content), so an unchanged
step is reused, not rebuilt. RUN steps execute in a build sandbox of the real runtime backend (internet on,
the host CA lent through a read-only bind), and the sandbox's overlay upper dir becomes the layer. COPY and
WORKDIR layers are written directly (no code of the user runs for them). Only a complete build registers
a name, so a failed step leaves at most reusable cache layers behind, never a half image.

Every layer a RUN made was written by the build's own code: the host reads it (USER's /etc/passwd, COPY
and WORKDIR destinations) only through layerfs, i.e. resolved inside the image, regular files only, with
a cap, and in a worker thread with a timeout, never on the event loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from sandboxd.errors import BuildFailed, Conflict, NotFound, SandboxdError
from sandboxd.runtime import inroot
from sandboxd.runtime.base import SandboxSpec, TemplateImage
from sandboxd.templates import buildenv, context, layerfs, registry, runlog, stagecopy
from sandboxd.templates.bases import BUILTINS
from sandboxd.templates.steps import BuildRecipe, Step, check_name, expand_env

Log = Callable[[str], None]
RUN_TIMEOUT = 1800.0
FS_TIMEOUT = 60.0  # a host-side read of the image's files (USER's /etc/passwd)
# Things the runtime mounts into a build sandbox; they must never land in a layer.
BUILD_ONLY_PATHS = (buildenv.BUILD_CA_PATH, "/opt/sandboxd/pkg/sandboxd", runlog.IN_SANDBOX)


def _h(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _State:
    layers: list[Path]
    key: str
    env: dict[str, str]
    workdir: str
    user: str
    hashes: list[str] = field(default_factory=list)
    agent_runtime: Path | None = None

    @classmethod
    def of(cls, image: TemplateImage, env: dict[str, str] | None = None) -> "_State":
        return cls(layers=list(image.layers), key=image.content_hash, env={**image.env, **(env or {})},
                   workdir=image.workdir, user=image.user, agent_runtime=image.agent_runtime)

    def copy(self) -> "_State":
        return _State(layers=list(self.layers), key=self.key, env=dict(self.env), workdir=self.workdir,
                      user=self.user, agent_runtime=self.agent_runtime)

    def image(self, name: str, recipe: BuildRecipe | None = None) -> TemplateImage:
        return TemplateImage(
            name=name, layers=tuple(self.layers), content_hash=self.key, env=dict(self.env),
            workdir=self.workdir, user=self.user, agent_runtime=self.agent_runtime,
            start_cmd=recipe.start_cmd if recipe else None, ready_check=recipe.ready_check if recipe else None)


class Builder:
    def __init__(self, store, backend=None):
        self.store = store
        self.settings = store.settings
        self._backend = backend
        self._resources = None  # the build sandbox's cpu/memory/disk, from the recipe being built

    @property
    def backend(self):
        if self._backend is None:
            try:
                from sandboxd.runtime import get_backend
            except ImportError:  # an older runtime package without the factory: crun/runc directly
                from sandboxd.runtime.oci.backend import OciBackend
                self._backend = OciBackend(self.settings, runtime=self.settings.backend)
            else:
                self._backend = get_backend(self.settings)
        return self._backend

    # ---- FROM ------------------------------------------------------------------------------------
    async def resolve_from(self, from_image: str, log: Log) -> TemplateImage:
        from sandboxd.templates.oci_import import import_oci, is_import_ref

        ref = from_image.strip()
        if is_import_ref(ref):
            return await import_oci(self.store, ref, log)
        try:
            return self.store.get(ref)
        except NotFound:
            pass
        src = registry.source(self.settings, ref)
        if src is not None:
            return await self._pull(src, ref, log)
        local = registry.alias(self.settings, ref)
        if local is not None:
            log(f"FROM {ref}: the operator maps it onto the template {local!r} (SANDBOXD_IMAGE_ALIASES)")
            if local in BUILTINS:
                return await self.store.ensure_builtin(local, log)
            return self.store.get(local)
        raise NotFound(image_not_found(ref), code="image_not_found")

    async def _pull(self, src: str, ref: str, log: Log) -> TemplateImage:
        from sandboxd.templates.oci_import import import_layout

        staged = self.store.new_tmp("pull")
        try:
            tag = await registry.pull(self.settings, src, staged / "layout", log)
            return await import_layout(self.store, staged / "layout", tag, ref, log)
        finally:
            await asyncio.to_thread(shutil.rmtree, staged, True)

    # ---- the build -------------------------------------------------------------------------------
    async def build(self, recipe: BuildRecipe, log: Log) -> TemplateImage:
        check_name(recipe.name)
        if recipe.name in BUILTINS:
            raise Conflict(f"{recipe.name!r} is a built-in template; choose another name")
        self._resources = recipe.resources
        started = time.monotonic()
        parent = await self.resolve_from(recipe.from_image, log)
        state = _State.of(parent, recipe.env)
        if recipe.env:
            state.key = _h(state.key, "env", recipe.env)
        stages: list[_State] = []  # the earlier stages of a multi-stage build; only the last one is saved
        scratch = self.store.new_tmp(f"build-{recipe.name}")
        try:
            total = len(recipe.steps)
            for i, step in enumerate(recipe.steps, 1):
                log(f"Step {i}/{total}: {step.describe()}")
                try:
                    if step.kind == "FROM":
                        stages.append(state)
                        state = await self._stage(step, stages, log)
                    else:
                        await self._step(step, recipe, state, scratch, log, stages)
                except SandboxdError as exc:
                    if step.line and not exc.message.startswith("Dockerfile line"):
                        exc.message = f"Dockerfile line {step.line} ({step.kind}): {exc.message}"
                        exc.args = (exc.message,)
                    raise
            image = state.image(recipe.name, recipe)
            final = replace(image, content_hash=_h(state.key, image.env, image.workdir, image.user,
                                                   image.start_cmd, image.ready_check))
            self.store.save_image(final, extra={"from_image": recipe.from_image,
                                                "build_seconds": round(time.monotonic() - started, 3)})
            log(f"Template {recipe.name} built in {time.monotonic() - started:.1f}s ({final.content_hash[:12]})")
            return final
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def _stage(self, step: Step, stages: list[_State], log: Log) -> _State:
        """The state a FROM step begins: a copy of an earlier stage's, or a base image's."""
        if step.from_stage is not None:
            return stages[step.from_stage].copy()
        return _State.of(await self.resolve_from(step.args[0], log))

    async def _step(self, step: Step, recipe: BuildRecipe, state: _State, scratch: Path, log: Log,
                    stages: Sequence[_State] = ()) -> None:
        nonce = uuid.uuid4().hex if (step.skip_cache or recipe.skip_cache) else None
        if step.kind == "ENV":
            values = [expand_env(v, state.env) if step.expand else v for v in step.args[1::2]]
            state.env.update(zip(step.args[::2], values))
            state.key = _h(state.key, step.key())
            return
        if step.kind == "USER":
            user = step.args[0]
            if await self._fs(layerfs.passwd_entry, list(state.layers), user) is None:
                raise BuildFailed(f"USER {user}: no such user in the image")
            state.user = user
            state.key = _h(state.key, step.key())
            return
        if step.kind == "WORKDIR":
            state.workdir = layerfs.clean_path(step.args[0], state.workdir)
            key = _h(state.key, step.key(), state.workdir, state.user, nonce)
            await self._layer(key, state, log, lambda rootfs: self._make_workdir(rootfs, state))
            return
        if step.kind == "COPY":
            if step.from_stage is not None or step.from_image:
                ctx = await self._other_image(step, stages, scratch, log)
            else:
                ctx = await asyncio.to_thread(context.materialize, recipe.context_for(step),
                                              scratch / (step.files_hash or "ctx"))
            entries = await asyncio.to_thread(context.matches, ctx, step.args[0])
            if step.extract:  # an unpacked archive is hashed as a tree of its own
                entries = await asyncio.to_thread(stagecopy.unpack_archives, entries, scratch)
                digest = _h(*[await asyncio.to_thread(context.content_hash, [e], e.parent) for e in entries])
            else:
                digest = await asyncio.to_thread(context.content_hash, entries, ctx)
            key = _h(state.key, step.key(), state.workdir, digest, nonce)
            await self._layer(key, state, log, lambda rootfs: self._copy(rootfs, step, entries, state))
            return
        if step.user and await self._fs(layerfs.passwd_entry, list(state.layers), step.user) is None:
            # The words E2B's builder uses, which its SDK's users match on.
            raise BuildFailed(f"failed to run command {step.args[0]!r}: command failed: unauthenticated: "
                              f"invalid username: {step.user!r}")
        key = _h(state.key, step.key(), state.env, state.workdir, state.user, nonce)
        await self._layer(key, state, log, None, run=step)

    async def _other_image(self, step: Step, stages: Sequence[_State], scratch: Path, log: Log) -> Path:
        """COPY --from: the named paths of an earlier stage or a template, unpacked as a build context."""
        if step.from_stage is not None:
            image = stages[step.from_stage].image(f"stage-{step.from_stage}")
        else:
            image = await self.resolve_from(step.from_image or "", log)
        where = scratch / f"from-{uuid.uuid4().hex[:8]}"
        where.mkdir()
        await stagecopy.export(self.backend, image, step.args[0], where / "files.tar", self._resources, log)
        return await asyncio.to_thread(context.materialize, where / "files.tar", where)

    async def _layer(self, key: str, state: _State, log: Log, make, run: Step | None = None) -> None:
        if self.store.has_layer(key):
            log(f" ---> using cache {key[:12]}")
        else:
            staged = self.store.new_tmp("layer")
            rootfs = staged / "rootfs"
            rootfs.mkdir()
            try:
                if run is not None:
                    await self._run(run, state, rootfs, log)
                else:
                    # No timeout: a COPY may be gigabytes; what it reads from the image cannot block (layerfs).
                    await asyncio.to_thread(make, rootfs)
                self.store.commit_layer(staged, key, {"kind": run.kind if run else "files", "parent": state.key})
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, staged, True)
                raise
            log(f" ---> {key[:12]}")
        state.layers.insert(0, self.store.layer_path(key))
        state.key = key

    async def _fs(self, fn, *args):
        """fn(*args) on layer files, in a worker thread: what a build wrote may be slow or hostile to read."""
        try:
            return await inroot.run_bounded(fn, *args, timeout=FS_TIMEOUT)
        except asyncio.TimeoutError:
            raise BuildFailed(f"reading the image's files took longer than {FS_TIMEOUT:.0f}s") from None

    # ---- layer makers ----------------------------------------------------------------------------
    def _host_owner(self, user: str, layers: list[Path]) -> tuple[int, int]:
        ids = layerfs.passwd_entry(layers, user)
        if ids is None:
            raise BuildFailed(f"unknown user {user!r} in the image")
        return ids[0] + self.settings.uid_base, ids[1] + self.settings.uid_base

    def _make_workdir(self, rootfs: Path, state: _State) -> None:
        path = layerfs.resolve(state.layers, state.workdir)
        layerfs.ensure_dirs(rootfs, path, state.layers, leaf_owner=self._host_owner(state.user, state.layers),
                            default_owner=(self.settings.uid_base, self.settings.uid_base))

    def _copy(self, rootfs: Path, step: Step, entries: list[Path], state: _State) -> None:
        raw_dest = step.args[1]
        dest = layerfs.resolve(state.layers, layerfs.clean_path(raw_dest, state.workdir))
        dest_is_dir = raw_dest.endswith("/") or len(entries) > 1 or any(e.is_dir() for e in entries) or (
            layerfs.is_dir(state.layers, dest))
        root_ids = (self.settings.uid_base, self.settings.uid_base)
        owner = self._host_owner(step.owner, state.layers) if step.owner else root_ids
        parent = dest if dest_is_dir else str(Path(dest).parent)
        layerfs.ensure_dirs(rootfs, parent, state.layers, default_owner=root_ids)
        context.copy_into(entries, rootfs / dest.lstrip("/"), dest_is_dir, owner,
                          int(step.permissions, 8) if step.permissions else None)

    async def _run(self, step: Step, state: _State, rootfs: Path, log: Log) -> None:
        backend = self.backend
        if backend.capabilities.isolation == "process":
            raise BuildFailed(f"RUN steps need an isolating backend; {backend.capabilities.name!r} runs on the host")
        ca = buildenv.host_ca_bundle()
        binds = ((ca, buildenv.BUILD_CA_PATH),) if ca else ()
        sid = f"build-{uuid.uuid4().hex[:12]}"
        spec = SandboxSpec(id=sid, image=state.image(sid), env=dict(state.env), internet_access=True, binds=binds,
                           resources=self._resources)
        try:
            sandbox = await backend.create(spec)
            env = {**state.env, **buildenv.build_env(buildenv.BUILD_CA_PATH if ca else None)}
            await backend.exec(sid, runlog.PREPARE, user="root", timeout=60)
            follower = runlog.LogFollower(sandbox.upper_dir / runlog.LOG_NAME, log) if sandbox.upper_dir else None
            argv = list(step.args) if step.exec else runlog.wrap(step.args[0])  # exec form: no shell
            task = asyncio.ensure_future(backend.exec(sid, argv, user=step.user or state.user,
                                                      cwd=state.workdir, env=env, timeout=RUN_TIMEOUT))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=0.5)
                    if follower:
                        await follower.apoll()
            finally:
                if not task.done():
                    task.cancel()
            result = task.result()
            if follower:
                await follower.afinish()
            for stream in (result.stdout, result.stderr):  # whatever came before the redirection
                for line in stream.decode(errors="replace").splitlines():
                    log(line)
            if result.timed_out:
                raise BuildFailed(f"step {step.describe()!r} timed out after {RUN_TIMEOUT:.0f}s")
            if result.exit_code != 0:
                tail = follower.tail if follower else (result.stdout + result.stderr).decode(errors="replace")[-4000:]
                raise BuildFailed(f"step {step.describe()!r} failed with exit code {result.exit_code}",
                                  details={"log_tail": tail, "exit_code": result.exit_code})
            try:
                # Freeze whatever the step left running so nothing writes while the changes are copied out
                # (stop would unmount the sandbox's disk, and with it the upper dir). Not optional: cp walks
                # the upper dir by path, and a process still running could swap a directory it is about to
                # enter for a symlink to the host.
                await backend.pause(sid)
            except SandboxdError as exc:
                raise BuildFailed(f"could not freeze the build sandbox to copy its changes: {exc.message}") from None
            if sandbox.upper_dir is None:
                raise BuildFailed(f"backend {backend.capabilities.name!r} does not expose a sandbox's changes")
            await copy_upper(sandbox.upper_dir, rootfs)
        finally:
            try:
                await backend.destroy(sid)
            except SandboxdError as exc:
                log(f"warning: could not destroy build sandbox {sid}: {exc}")



async def copy_upper(upper: Path, rootfs: Path) -> None:
    """Copy a sandbox's overlay upper dir (with whiteouts, xattrs and owners) into a layer, minus build-only mounts."""
    proc = await asyncio.create_subprocess_exec("cp", "-a", f"{upper}/.", f"{rootfs}/",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        # cp -a is the tool that keeps whiteouts (char 0:0), opaque xattrs and hard links; fall back never.
        text = out.decode(errors="replace")[-2000:].replace(str(upper), "").replace(str(rootfs), "")
        raise BuildFailed(f"copying the build sandbox's changes failed: {text}")
    await asyncio.to_thread(drop_build_only, rootfs)


def drop_build_only(rootfs: Path) -> None:
    """Remove the build-only mount targets from a layer copied out of a sandbox, without following any
    symlink the build left on the way (a mount target under a symlinked directory is not in this layer)."""
    for path in BUILD_ONLY_PATHS:
        parent, name = path.rsplit("/", 1)
        try:
            pfd = inroot.open_in(rootfs, parent or "/", os.O_RDONLY | os.O_DIRECTORY,
                                 resolve=inroot.RESOLVE_BENEATH | inroot.RESOLVE_NO_SYMLINKS)
        except OSError:
            continue
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=pfd)
            else:
                os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        finally:
            os.close(pfd)


def image_not_found(ref: str) -> str:
    return (f"base image {ref!r} not found: name a template, an OCI archive (oci-archive:upload:<files_hash>, or "
            "a path in the import directory), an image of a registry the operator configured "
            "(SANDBOXD_REGISTRIES, SANDBOXD_DEFAULT_REGISTRY), or a name the operator maps onto a template "
            "(SANDBOXD_IMAGE_ALIASES)")
