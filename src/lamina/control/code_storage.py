"""Code on disk: what nothing refers to is removed, unpacked code stays within a budget.

What refers to code: every function version (its zip and, in order, its layers'
zips: a function keeps a layer version it attached even after that version is
deleted, as on AWS) and every layer version. A blob nothing refers to is deleted
as soon as that is so: after DeleteFunction (of a function or of one version),
DeleteLayerVersion, an UpdateFunctionCode that replaced $LATEST's code (unless a
published version has the same code), and at start-up (what a crash left).

Unpacked trees (store.unpacked) are a cache of the blobs, and the disk they take
is not what users are charged for: a 1 MB zip of zeros unpacks to 250 MB. So
- a tree nothing refers to is removed like its blob, except while a running
  environment has it mounted at /var/task or /opt: deleting its files would empty
  the directory inside the sandbox too (a bind mount shares the directory, not a
  copy), and the function's next import would fail. It goes when its
  environments are gone (checked every second while any such tree waits);
- trees still referenced are evicted, least recently handed out first, when all
  trees together pass the budget (Settings.unpacked_code_mb); the next cold start
  of their function unpacks the blob again. Trees in use are never evicted, so
  the budget can be exceeded by what is running at once; that is logged.

One process owns a data directory's code: blobs being stored are held in memory
(BlobStore.stored) until their record is committed, which another process would
not see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lamina.control.models import FunctionVersion
from lamina.store.blobs import BlobStore
from lamina.store.functions import FunctionStore
from lamina.store.layers import LayerStore
from lamina.store.unpacked import UnpackedCode, layers_tree_name

log = logging.getLogger("lamina.code")

# How often the budget is checked (new trees appear at cold starts, unannounced).
SWEEP_INTERVAL_S = 10.0
# How often trees waiting for their environments to stop are looked at again.
RETRY_INTERVAL_S = 1.0
# A tree handed out this recently is not evicted for the budget: the environment
# it was unpacked for may be starting and not yet count as holding it.
EVICTION_GRACE_S = 10.0


@dataclass(frozen=True)
class CodeUsage:
    """What code takes on disk: the zips (what AWS counts) and their unpacked trees."""

    blobs: int
    blob_bytes: int
    trees: int
    unpacked_bytes: int
    budget_bytes: int

    def describe(self) -> str:
        mb = 1024 * 1024
        return (f"{self.blobs} code blobs, {self.blob_bytes / mb:,.1f} MB; unpacked: "
                f"{self.trees} trees, {self.unpacked_bytes / mb:,.1f} MB of "
                f"{self.budget_bytes / mb:,.0f} MB")


@dataclass(frozen=True)
class CodeReferences:
    digests: frozenset[str]
    trees: frozenset[str]


class CodeStorage:
    def __init__(self, blobs: BlobStore, unpacked: UnpackedCode, functions: FunctionStore,
                 layers: LayerStore, budget_bytes: int) -> None:
        self.blobs = blobs
        self.unpacked = unpacked
        self.functions = functions
        self.layers = layers
        self.budget_bytes = budget_bytes
        # The directories running environments have mounted (wired by the platform).
        self.held: Callable[[], Iterable[Path]] = lambda: ()
        # Trees nothing refers to that an environment still holds.
        self._waiting: set[str] = set()
        self._over_budget_logged = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def references(self) -> CodeReferences:
        digests: set[str] = set()
        trees: set[str] = set()
        for data in self.functions.all_versions():
            fv = FunctionVersion.from_json(data)
            # The same names environments.pool asks store.unpacked for.
            layer_shas = [layer.code_sha256_hex for layer in fv.layers]
            digests.add(fv.code_sha256_hex)
            digests.update(layer_shas)
            trees.add(fv.code_sha256_hex)
            if layer_shas:
                trees.add(layers_tree_name(layer_shas))
        digests.update(data["code_sha256_hex"] for data in self.layers.versions())
        return CodeReferences(frozenset(digests), frozenset(trees))

    def _held_names(self) -> set[str]:
        return {path.name for path in map(Path, self.held()) if path.parent == self.unpacked.root}

    def collect(self) -> None:
        """Remove the blobs and unpacked trees nothing refers to; a tree in use goes
        once its environments are gone. Call on the event loop after a change of
        references is committed; the slow part (deleting trees) runs in the
        background."""
        references = self.references()
        for digest in self.blobs.digests():
            if digest not in references.digests:
                self.blobs.delete(digest)
        held = self._held_names()
        for name in self.unpacked.names():
            if name in references.trees:
                continue
            if name in held:
                self._waiting.add(name)
            else:
                self.unpacked.discard(name)
        self._wake.set()

    def _retry_waiting(self) -> None:
        held = self._held_names()
        for name in list(self._waiting):
            if name not in held:
                self._waiting.discard(name)
                self.unpacked.discard(name)

    async def _keep_within_budget(self) -> None:
        trees = await asyncio.to_thread(self.unpacked.trees)
        total = sum(tree.size for tree in trees)
        if total > self.budget_bytes:
            # Asked again after the await: environments started meanwhile count.
            held = self._held_names()
            for tree in sorted(trees, key=lambda tree: tree.last_used):
                if total <= self.budget_bytes:
                    break
                last_used = self.unpacked.last_used(tree.name)
                if tree.name in held or last_used is None or time.time() - last_used < EVICTION_GRACE_S:
                    continue
                if self.unpacked.discard(tree.name):
                    total -= tree.size
                    log.info("evicted unpacked code %s (%d bytes)", tree.name, tree.size)
        over = total > self.budget_bytes
        if over and not self._over_budget_logged:
            log.warning("unpacked code takes %d bytes, over its budget of %d bytes "
                        "(LAMINA_UNPACKED_CODE_MB): the rest is in use by running environments",
                        total, self.budget_bytes)
        self._over_budget_logged = over

    async def _run(self) -> None:
        while True:
            interval = RETRY_INTERVAL_S if self._waiting else SWEEP_INTERVAL_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                self._retry_waiting()
                await self._keep_within_budget()
                await asyncio.to_thread(self.unpacked.empty_trash)
            except Exception:
                log.exception("collecting unpacked code")

    def sweep(self) -> CodeUsage:
        """At start-up, before any environment runs: remove what a crash left
        half-written and everything nothing refers to; measure what is left."""
        self.blobs.sweep_leftovers()
        self.unpacked.empty_trash(builds_too=True)
        self.collect()
        self.unpacked.empty_trash()
        return self.usage()

    def usage(self) -> CodeUsage:
        """Blocking: a tree not measured before is walked."""
        blobs = self.blobs.digests()
        trees = self.unpacked.trees()
        return CodeUsage(len(blobs), sum(blobs.values()), len(trees),
                         sum(tree.size for tree in trees), self.budget_bytes)

    async def start(self) -> None:
        usage = await asyncio.to_thread(self.sweep)
        log.info("code on disk: %s", usage.describe())
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
