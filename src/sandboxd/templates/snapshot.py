"""A snapshot: a sandbox's filesystem as a new template image, one layer of its changes on top of the
layers of the image it started from (E2B's `create_snapshot`, docs/e2b.md "Snapshots").

The sandbox's backend copies its changes out (runtime: export_changes, the sandbox frozen meanwhile); here
they become a layer of the store. The copy is hostile content: it is only ever read as a lower dir of later
sandboxes' overlays (idmapped to their own uid ranges), never walked by the host beyond the copy itself.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable

from sandboxd.runtime.base import TemplateImage
from sandboxd.templates.build import drop_build_only
from sandboxd.templates.store import TemplateStore


async def snapshot_image(store: TemplateStore, name: str, parent: TemplateImage,
                         export: Callable[[Path], Awaitable[None]], source: str) -> TemplateImage:
    """Save, under name, parent with the changes export(dir) writes into dir as its top layer."""
    staged = store.new_tmp("snapshot")
    rootfs = staged / "rootfs"
    rootfs.mkdir()
    # Each snapshot is its own layer: the same sandbox a second later is other content.
    key = hashlib.sha256(f"{parent.content_hash}:snapshot:{uuid.uuid4().hex}".encode()).hexdigest()
    try:
        await export(rootfs)
        await asyncio.to_thread(drop_build_only, rootfs)
        store.commit_layer(staged, key, {"kind": "snapshot", "parent": parent.content_hash})
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staged, True)
        raise
    image = replace(parent, name=name, layers=(store.layer_path(key), *parent.layers),
                    content_hash=hashlib.sha256(json.dumps([key, parent.content_hash]).encode()).hexdigest())
    store.save_image(image, extra={"from_image": parent.name, "snapshot_of": source, "snapshot_at": time.time()})
    return image
