"""Code signing configs, the functions that use them, and checking packages against them.

A function with a code signing config (CreateFunction's CodeSigningConfigArn, or
PutFunctionCodeSigningConfig) has every new .zip package (CreateFunction,
UpdateFunctionCode) and every layer it is given (CreateFunction,
UpdateFunctionConfiguration) checked, as Lambda does:

1. integrity: the package is unchanged since it was signed (the digest matches and the
   signing profile's key made the signature). A failure is always refused, with
   InvalidCodeSignatureException, whatever the policy;
2. mismatch: it is signed, by a profile version the config allows;
3. expiry: the signature's validity period (from the profile) has not ended;
4. revocation: the profile was not revoked with effect before the signature was made,
   nor the signature itself (RevokeSignature).

A failure of 2-4 is refused with CodeVerificationFailedException under the `Enforce`
policy; under `Warn` (the default) the package is deployed, the failure logged and
counted in the function's SignatureValidationErrors metric. Adding a config to a
function does not re-check the code it already has (as on Lambda).

Signatures are Lamina's (see control.code_signatures), made by control.signer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lamina.control.code_signatures import CodeSignature, MalformedSignature, read
from lamina.control.functions import (
    IMAGES_NOT_SIGNED,
    MAX_TAGS,
    FunctionRegistry,
    too_many_tags,
)
from lamina.control.models import AttachedLayer, aws_timestamp
from lamina.control.paging import Page, page_of
from lamina.control.signer import SigningProfiles
from lamina.errors import (
    CodeSigningConfigNotFoundException,
    CodeVerificationFailedException,
    InvalidCodeSignatureException,
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lamina.store.blobs import BlobStore
from lamina.store.code_signing import CodeSigningStore

if TYPE_CHECKING:
    from lamina.control.arns import Region

log = logging.getLogger("lamina.code_signing")

WARN, ENFORCE = "Warn", "Enforce"
_CONFIG_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"code-signing-config:(?P<id>csc-[a-z0-9]{17})$"
)


def _config_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "csc-" + "".join(secrets.choice(alphabet) for _ in range(17))


@dataclass(frozen=True)
class CodeSigningConfig:
    config_id: str
    arn: str
    description: str
    signing_profile_version_arns: list[str]
    untrusted_artifact_on_deployment: str
    last_modified: str

    def to_api(self) -> dict[str, Any]:
        return {
            "CodeSigningConfigId": self.config_id,
            "CodeSigningConfigArn": self.arn,
            "Description": self.description,
            "AllowedPublishers": {"SigningProfileVersionArns": list(self.signing_profile_version_arns)},
            "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": self.untrusted_artifact_on_deployment},
            "LastModified": self.last_modified,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeSigningConfig:
        return cls(**data)

    def allows(self, profile_version_arn: str) -> bool:
        """Whether a signature by this profile version is from an allowed publisher. A
        profile's ARN without a version allows each of its versions."""
        return any(
            profile_version_arn == allowed or profile_version_arn.startswith(allowed + "/")
            for allowed in self.signing_profile_version_arns
        )


class CodeSigningConfigs:
    def __init__(self, store: CodeSigningStore, functions: FunctionRegistry,
                 profiles: SigningProfiles, blobs: BlobStore, region: Region) -> None:
        self.store = store
        self.functions = functions
        self.profiles = profiles
        self.blobs = blobs
        self.region = region
        # Called with the function's name for each failed check deployed under Warn
        # (the platform counts it as SignatureValidationErrors).
        self.warned: Callable[[str], None] = lambda function_name: None
        # Layer code's digest and signature, by the code's SHA-256 (see _read_layer).
        self._layer_reads: dict[str, tuple[str, CodeSignature | None]] = {}

    def arn(self, config_id: str) -> str:
        return (f"arn:aws:lambda:{self.region.region}:{self.region.account_id}:"
                f"code-signing-config:{config_id}")

    # -- configs ------------------------------------------------------------------------

    def create(self, description: str | None, publishers: dict[str, Any],
               policies: dict[str, Any] | None, tags: dict[str, str] | None = None) -> CodeSigningConfig:
        if tags and len(tags) > MAX_TAGS:
            raise too_many_tags()
        config_id = _config_id()
        config = CodeSigningConfig(
            config_id=config_id, arn=self.arn(config_id), description=description or "",
            signing_profile_version_arns=list(publishers["SigningProfileVersionArns"]),
            untrusted_artifact_on_deployment=(policies or {}).get("UntrustedArtifactOnDeployment", WARN),
            last_modified=aws_timestamp(),
        )
        self.store.create(config_id, dataclasses.asdict(config))
        if tags:
            self.functions.store.put_tags(config.arn, tags)
        return config

    def get(self, arn: str) -> CodeSigningConfig:
        config = self._find(arn)
        if config is None:
            raise self._not_found(arn)
        return config

    def update(self, arn: str, description: str | None, publishers: dict[str, Any] | None,
               policies: dict[str, Any] | None) -> CodeSigningConfig:
        config = self.get(arn)
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = description
        if publishers is not None:
            changes["signing_profile_version_arns"] = list(publishers["SigningProfileVersionArns"])
        if policies and "UntrustedArtifactOnDeployment" in policies:
            changes["untrusted_artifact_on_deployment"] = policies["UntrustedArtifactOnDeployment"]
        if changes:
            config = dataclasses.replace(config, **changes, last_modified=aws_timestamp())
            if not self.store.replace(config.config_id, dataclasses.asdict(config)):
                raise self._not_found(arn)
        return config

    def delete(self, arn: str) -> None:
        config = self.get(arn)
        users = self.store.functions_using(config.config_id)
        if users:
            raise ResourceConflictException(
                f"The code signing configuration {arn} cannot be deleted because it is used by "
                f"{len(users)} function(s): {', '.join(users[:5])}. Remove it from them first "
                "(DeleteFunctionCodeSigningConfig).")
        if not self.store.delete(config.config_id):
            raise self._not_found(arn)
        self.functions.store.remove_tags(config.arn, list(self.functions.store.get_tags(config.arn)))

    # -- tags (TagResource, UntagResource, ListTags with a config's ARN) ----------------------

    def list_tags(self, arn: str) -> dict[str, str]:
        return self.functions.store.get_tags(self.get(arn).arn)

    def tag_resource(self, arn: str, values: dict[str, str]) -> None:
        config = self.get(arn)
        if not values:
            raise InvalidParameterValueException("An error occurred and the request cannot be processed.")
        if len(set(self.functions.store.get_tags(config.arn)) | set(values)) > MAX_TAGS:
            raise too_many_tags()
        self.functions.store.put_tags(config.arn, values)

    def untag_resource(self, arn: str, keys: list[str]) -> None:
        self.functions.store.remove_tags(self.get(arn).arn, keys)

    def list_configs(self, marker: str | None, max_items: int | None) -> Page[CodeSigningConfig]:
        configs = [CodeSigningConfig.from_json(c) for c in self.store.all()]
        following = [c for c in configs if marker is None or c.config_id > marker]
        return page_of(following, max_items, lambda c: c.config_id)

    def list_functions(self, arn: str, marker: str | None, max_items: int | None) -> Page[str]:
        config = self.get(arn)
        names = self.store.functions_using(config.config_id)
        following = [n for n in names if marker is None or n > marker]
        page = page_of(following, max_items, lambda name: name)
        return Page([self.functions.function_arn(n) for n in page.items], page.next_marker)

    # -- functions' configs ----------------------------------------------------------------

    def put_function(self, function_name: str, arn: str) -> tuple[str, CodeSigningConfig]:
        config = self._find(arn)
        if config is None:
            raise self._function_config_not_found(arn)
        name = self._function_name(function_name)
        if not self.store.use(name, config.config_id):
            raise self._function_config_not_found(arn)
        return name, config

    def get_function(self, function_name: str) -> tuple[str, CodeSigningConfig | None]:
        name = self._function_name(function_name)
        config_id = self.store.config_of(name)
        data = self.store.get(config_id) if config_id else None
        return name, CodeSigningConfig.from_json(data) if data else None

    def delete_function(self, function_name: str) -> None:
        # Idempotent: a function without a config has nothing to delete (AWS: 204).
        self.store.stop_using(self._function_name(function_name))

    def config_for(self, function_name: str | None, arn: str | None) -> CodeSigningConfig | None:
        """The config a function's code is checked against: the one CreateFunction names
        (which must exist), else the one the function uses."""
        if arn is not None:
            config = self._find(arn)
            if config is None:
                raise self._function_config_not_found(arn)
            return config
        if function_name is None:
            return None
        config_id = self.store.config_of(function_name)
        data = self.store.get(config_id) if config_id else None
        return CodeSigningConfig.from_json(data) if data else None

    def use(self, function_name: str, config: CodeSigningConfig) -> None:
        self.store.use(function_name, config.config_id)

    # -- checking code -------------------------------------------------------------------

    def check(self, config: CodeSigningConfig, function_name: str, package: bytes | None,
              layers: list[AttachedLayer], now: float | None = None) -> None:
        """Check a function's new package and its layers; raise as Lambda does, or warn.
        `now` (epoch seconds) is the moment signatures must be valid at."""
        now = time.time() if now is None else now
        reads: list[tuple[str, tuple[str, CodeSignature | None] | None]] = []
        if package is not None:
            arn = self.functions.function_arn(function_name)
            reads.append((arn, self._read(arn, package)))
        reads.extend((layer.arn, self._read_layer(layer)) for layer in layers)
        for arn, found in reads:
            problem = "is no longer stored on this server" if found is None else self._untrusted(
                config, arn, *found, now)
            if problem is None:
                continue
            if config.untrusted_artifact_on_deployment == ENFORCE:
                raise CodeVerificationFailedException(
                    "Lambda cannot deploy the function. The function or layer might be signed "
                    "using a signature that the client is not configured to accept. Check the "
                    f"provided signature for {arn}.")
            log.warning("code signing: %s %s; deployed under the Warn policy of %s",
                        arn, problem, config.arn)
            self.warned(function_name)

    def check_integrity(self, arn: str, package: bytes) -> None:
        """Refuse a signed package that was changed after it was signed (layers are
        checked so when published; against a config when a function uses them)."""
        self._signature(arn, *self._read(arn, package))

    def _untrusted(self, config: CodeSigningConfig, arn: str, digest_hex: str,
                   signature: CodeSignature | None, now: float) -> str | None:
        """Why a package is untrusted under `config` (None: it is trusted)."""
        signature = self._signature(arn, digest_hex, signature)
        if signature is None:
            return "is not signed"
        if not config.allows(signature.profile_version_arn):
            return (f"is signed by {signature.profile_version_arn}, which is not an allowed "
                    "publisher")
        profile = self.profiles.find_version(signature.profile_version_arn)
        if profile is None:
            return f"is signed by {signature.profile_version_arn}, a signing profile this server does not have"
        if now >= signature.expires_at:
            expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(signature.expires_at))
            return f"has a signature that expired at {expired}"
        if profile.revoked_from is not None and signature.signed_at >= profile.revoked_from:
            return f"is signed by {signature.profile_version_arn}, which was revoked"
        if self.profiles.signature_revoked(signature.job_id):
            return f"has a signature that was revoked (signing job {signature.job_id})"
        return None

    def _read(self, arn: str, package: bytes) -> tuple[str, CodeSignature | None]:
        try:
            return read(package)
        except MalformedSignature as error:
            raise self._integrity_failure(arn, str(error)) from None

    def _read_layer(self, layer: AttachedLayer) -> tuple[str, CodeSignature | None] | None:
        """A layer's digest and signature; None if its code is gone. Layer versions never
        change, so each is hashed once, not at every deployment of every function."""
        found = self._layer_reads.get(layer.code_sha256_hex)
        if found is None:
            try:
                content = self.blobs.path(layer.code_sha256_hex).read_bytes()
            except FileNotFoundError:
                return None
            found = self._layer_reads[layer.code_sha256_hex] = self._read(layer.arn, content)
        return found

    def _signature(self, arn: str, digest_hex: str,
                   signature: CodeSignature | None) -> CodeSignature | None:
        """The package's signature, checked for integrity; None if it has none."""
        if signature is None:
            return None
        if signature.digest_hex != digest_hex:
            raise self._integrity_failure(arn, "the package was changed after it was signed")
        profile = self.profiles.find_version(signature.profile_version_arn)
        if profile is not None and not profile.signed(signature):
            raise self._integrity_failure(
                arn, f"the signature was not made by {signature.profile_version_arn}")
        return signature

    @staticmethod
    def _integrity_failure(arn: str, why: str) -> InvalidCodeSignatureException:
        return InvalidCodeSignatureException(
            f"Lambda cannot deploy the function. The code signature of {arn} failed the "
            f"integrity check: {why}.")

    # -- inside --------------------------------------------------------------------------------

    def _find(self, arn: str) -> CodeSigningConfig | None:
        found = _CONFIG_ARN.match(arn)
        if found is None or (found["region"], found["account"]) != (
                self.region.region, self.region.account_id):
            return None
        data = self.store.get(found["id"])
        return CodeSigningConfig.from_json(data) if data else None

    def _function_name(self, function_name: str) -> str:
        ref = self.functions.resolve(function_name)
        if ref.qualifier is not None:
            raise InvalidParameterValueException(
                "Code signing configurations apply to a function, not to one of its versions or "
                "aliases; FunctionName must not carry a qualifier.")
        if self.functions.get_version(ref.name).package_type == "Image":  # 404 if none
            raise InvalidParameterValueException(IMAGES_NOT_SIGNED)
        return ref.name

    @staticmethod
    def _not_found(arn: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"The Lambda code signing configuration {arn} can not be found.")

    @staticmethod
    def _function_config_not_found(arn: str) -> CodeSigningConfigNotFoundException:
        return CodeSigningConfigNotFoundException(
            "The code signing configuration cannot be found. Check that the provided "
            f"configuration is not deleted: {arn}.")
