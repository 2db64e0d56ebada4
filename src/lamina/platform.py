"""Wiring: builds every layer from Settings, and starts and stops them together.

The HTTP front (`api`) and the CLI both take a Platform; nothing below `api`
knows about HTTP.
"""

from __future__ import annotations

from lamina.config import Settings
from lamina.control.aliases import Aliases
from lamina.control.arns import Region
from lamina.control.functions import FunctionRegistry
from lamina.control.layers import Layers
from lamina.control.policies import ResourcePolicies
from lamina.store.aliases import AliasStore
from lamina.store.blobs import BlobStore
from lamina.store.database import open_database
from lamina.store.functions import FunctionStore
from lamina.store.layers import LayerStore
from lamina.store.policies import PolicyStore


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = open_database(settings.sqlalchemy_url)
        self.region = Region(settings.region, settings.account_id)
        self.blobs = BlobStore(settings.data_dir / "code")
        self.policies = ResourcePolicies(PolicyStore(self.engine))
        self.layers = Layers(
            LayerStore(self.engine), self.policies, self.blobs, self.region, settings.limits
        )
        alias_store = AliasStore(self.engine)
        self.functions = FunctionRegistry(
            FunctionStore(self.engine), self.blobs, self.region, settings.limits,
            aliases=alias_store, layers=self.layers,
        )
        # Resolves FUNCTION[:QUALIFIER] for invocations: aliases.resolve_invocation_target.
        self.aliases = Aliases(self.functions, alias_store)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.engine.dispose()
