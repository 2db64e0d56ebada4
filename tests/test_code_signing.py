"""Code signing with a real server: the signer's profiles, signed packages (made with
`lamina sign` or SignPayload), code signing configs and what Lambda does with them."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lamina.config import Settings
from lamina.control.code_signatures import (
    DIGEST_PAYLOAD_FORMAT,
    content_digest,
    embed,
    read,
)
from lamina.errors import CodeVerificationFailedException
from lamina.platform import Platform
from tests.helpers import (
    BIN,
    ROLE,
    aws_error,
    clean_env,
    error_message,
    function_args,
    make_zip,
    wait_active,
    wait_updated,
)

CODE = make_zip({"app.py": "def handler(event, context):\n    return {'signed': True, **event}\n"})
LAYER = make_zip({"python/greeting.py": "HELLO = 'hello from a layer'\n"})
MISSING_CSC = "arn:aws:lambda:us-east-1:000000000000:code-signing-config:csc-0123456789abcdefg"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def signer(server: Any) -> Any:
    return server.client("signer")


@pytest.fixture(scope="module")
def profile(signer: Any) -> dict[str, Any]:
    """An active profile for Lambda; its PutSigningProfile answer."""
    return signer.put_signing_profile(profileName=unique("lambda_profile"),
                                      platformId="AWSLambda-SHA384-ECDSA")


def sign(signer: Any, profile_name: str, package: bytes) -> bytes:
    answer = signer.sign_payload(profileName=profile_name, payload=content_digest(package),
                                 payloadFormat=DIGEST_PAYLOAD_FORMAT)
    return embed(package, answer["signature"])


def profile_name(profile: dict[str, Any]) -> str:
    return profile["arn"].rsplit("/", 1)[1]


def config(lam: Any, arns: list[str], policy: str) -> str:
    created = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": arns},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": policy})
    return created["CodeSigningConfig"]["CodeSigningConfigArn"]


def tampered(package: bytes) -> bytes:
    """The package with one file changed and its (old) signature kept."""
    digest_hex, signature = read(package)
    assert signature is not None
    buffer = io.BytesIO(package)
    with zipfile.ZipFile(buffer) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["app.py"] = files["app.py"] + b"\nSTOLEN = True\n"
    return embed(make_zip(files), signature.to_comment())


# -- the signer -------------------------------------------------------------------------


def test_put_get_list_and_cancel_a_signing_profile(signer: Any, server: Any) -> None:
    name = unique("crud_profile")
    put = signer.put_signing_profile(
        profileName=name, platformId="AWSLambda-SHA384-ECDSA",
        signatureValidityPeriod={"value": 12, "type": "MONTHS"})
    assert put["arn"] == f"arn:aws:signer:us-east-1:000000000000:/signing-profiles/{name}"
    assert put["profileVersionArn"] == f"{put['arn']}/{put['profileVersion']}"
    assert len(put["profileVersion"]) == 10

    got = signer.get_signing_profile(profileName=name)
    assert got["status"] == "Active"
    assert got["platformId"] == "AWSLambda-SHA384-ECDSA"
    assert got["platformDisplayName"] == "AWS Lambda"
    assert got["signatureValidityPeriod"] == {"value": 12, "type": "MONTHS"}
    assert name in [p["profileName"] for p in signer.list_signing_profiles()["profiles"]]

    # The private key is on the server only, readable by its owner alone.
    key = server.data_dir / "signer" / f"{name}-{put['profileVersion']}.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")

    signer.cancel_signing_profile(profileName=name)
    assert signer.get_signing_profile(profileName=name)["status"] == "Canceled"
    assert name not in [p["profileName"] for p in signer.list_signing_profiles()["profiles"]]
    listed = signer.list_signing_profiles(includeCanceled=True)["profiles"]
    assert name in [p["profileName"] for p in listed]
    with aws_error(signer, "ValidationException", 400):
        signer.sign_payload(profileName=name, payload=b"\x00" * 48, payloadFormat=DIGEST_PAYLOAD_FORMAT)


def test_signer_refuses_bad_profiles_and_payloads_with_its_errors(signer: Any, profile: Any) -> None:
    with aws_error(signer, "ValidationException", 400) as info:
        signer.put_signing_profile(profileName=unique("other"), platformId="AWSIoTDeviceManagement-SHA256-ECDSA")
    assert "AWSLambda-SHA384-ECDSA" in error_message(info)
    with aws_error(signer, "ValidationException", 400) as info:
        signer.put_signing_profile(profileName=unique("long"), platformId="AWSLambda-SHA384-ECDSA",
                                   signatureValidityPeriod={"value": 136, "type": "MONTHS"})
    assert "135 months" in error_message(info)
    with aws_error(signer, "ValidationException", 400):
        signer.put_signing_profile(profileName=profile_name(profile),
                                   platformId="AWSLambda-SHA384-ECDSA")
    with aws_error(signer, "ResourceNotFoundException", 404):
        signer.get_signing_profile(profileName="no_such_profile")
    with aws_error(signer, "ValidationException", 400) as info:
        signer.sign_payload(profileName=profile_name(profile), payload=b"abc",
                            payloadFormat="JSON")
    assert DIGEST_PAYLOAD_FORMAT in error_message(info)
    with aws_error(signer, "ValidationException", 400) as info:
        signer.start_signing_job(
            source={"s3": {"bucketName": "b", "key": "k.zip", "version": "1"}},
            destination={"s3": {"bucketName": "b"}}, profileName="p1")
    assert "lamina sign" in error_message(info)


# -- code signing configs ----------------------------------------------------------------


def test_code_signing_config_create_get_update_list_delete(lam: Any, profile: Any) -> None:
    created = lam.create_code_signing_config(
        Description="Testing CodeSigning Config",
        AllowedPublishers={"SigningProfileVersionArns": [profile["profileVersionArn"]]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    csc = created["CodeSigningConfig"]
    assert csc["CodeSigningConfigId"].startswith("csc-") and len(csc["CodeSigningConfigId"]) == 21
    assert csc["CodeSigningConfigArn"] == (
        f"arn:aws:lambda:us-east-1:000000000000:code-signing-config:{csc['CodeSigningConfigId']}")
    assert csc["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Enforce"}
    arn = csc["CodeSigningConfigArn"]

    updated = lam.update_code_signing_config(
        CodeSigningConfigArn=arn, CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Warn"})
    assert updated["CodeSigningConfig"]["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Warn"
    assert updated["CodeSigningConfig"]["Description"] == "Testing CodeSigning Config"
    got = lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"]
    assert got == updated["CodeSigningConfig"]
    assert arn in [c["CodeSigningConfigArn"] for c in lam.list_code_signing_configs()["CodeSigningConfigs"]]

    name = unique("csc-crud")
    lam.create_function(**function_args(name))
    # A function without a config: 200 and nothing in it, as AWS answers.
    bare = lam.get_function_code_signing_config(FunctionName=name)
    assert "CodeSigningConfigArn" not in bare
    put = lam.put_function_code_signing_config(CodeSigningConfigArn=arn, FunctionName=name)
    assert (put["CodeSigningConfigArn"], put["FunctionName"]) == (arn, name)
    got = lam.get_function_code_signing_config(FunctionName=name)
    assert (got["CodeSigningConfigArn"], got["FunctionName"]) == (arn, name)
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == [
        f"arn:aws:lambda:us-east-1:000000000000:function:{name}"]

    # In use: not deleted.
    with aws_error(lam, "ResourceConflictException", 409):
        lam.delete_code_signing_config(CodeSigningConfigArn=arn)
    deleted = lam.delete_function_code_signing_config(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    # Nothing to delete: still 204.
    lam.delete_function_code_signing_config(FunctionName=name)
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == []
    assert lam.delete_code_signing_config(CodeSigningConfigArn=arn)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.get_code_signing_config(CodeSigningConfigArn=arn)


def test_code_signing_config_errors_are_aws_s(lam: Any, lam_unchecked: Any, profile: Any) -> None:
    messages = {}
    for operation in ("get_code_signing_config", "delete_code_signing_config",
                      "list_functions_by_code_signing_config", "update_code_signing_config"):
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            getattr(lam, operation)(CodeSigningConfigArn=MISSING_CSC)
        messages[operation] = error_message(info)
    assert set(messages.values()) == {
        f"The Lambda code signing configuration {MISSING_CSC} can not be found."}

    name = unique("csc-errors")
    lam.create_function(**function_args(name))
    for function_name in (name, "csc-test-doesnotexist"):
        with aws_error(lam, "CodeSigningConfigNotFoundException", 404) as info:
            lam.put_function_code_signing_config(CodeSigningConfigArn=MISSING_CSC, FunctionName=function_name)
        assert error_message(info) == (
            "The code signing configuration cannot be found. Check that the provided "
            f"configuration is not deleted: {MISSING_CSC}.")
    arn = config(lam, [profile["profileVersionArn"]], "Warn")
    for operation, extra in (("get_function_code_signing_config", {}),
                             ("delete_function_code_signing_config", {}),
                             ("put_function_code_signing_config", {"CodeSigningConfigArn": arn})):
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            getattr(lam, operation)(FunctionName="csc-test-doesnotexist", **extra)
        assert error_message(info) == (
            "Function not found: arn:aws:lambda:us-east-1:000000000000:function:csc-test-doesnotexist")

    # The model's limits: 1-20 publishers, Warn|Enforce, the ARN's form.
    too_many = [f"{profile['arn']}/v{i:09d}" for i in range(21)]
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": too_many})
    assert "allowedPublishers.signingProfileVersionArns" in error_message(info)
    assert "Member must have length less than or equal to 20" in error_message(info)
    with aws_error(lam_unchecked, "ValidationException", 400):
        lam_unchecked.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": []})
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.create_code_signing_config(
            AllowedPublishers={"SigningProfileVersionArns": [profile["profileVersionArn"]]},
            CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Block"})
    assert "Member must satisfy enum value set: [Warn, Enforce]" in error_message(info)
    with aws_error(lam_unchecked, "ValidationException", 400) as info:
        lam_unchecked.get_code_signing_config(CodeSigningConfigArn="csc-0123456789abcdefg")
    assert "codeSigningConfigArn" in error_message(info)
    with aws_error(lam, "CodeSigningConfigNotFoundException", 404):
        lam.create_function(**function_args(unique("csc-missing"), CodeSigningConfigArn=MISSING_CSC))


# -- checking packages -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lamina_sign(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = clean_env(tmp_path_factory.mktemp("lamina-sign-home"), LAMINA_ENDPOINT=server.endpoint)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "lamina"), "sign", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    return run


def test_enforce_refuses_an_unsigned_package_and_runs_one_signed_with_lamina_sign(
        lam: Any, signer: Any, profile: Any, lamina_sign: Any, tmp_path: Path) -> None:
    arn = config(lam, [profile["profileVersionArn"]], "Enforce")
    name = unique("csc-enforce")
    with aws_error(lam, "CodeVerificationFailedException", 400) as info:
        lam.create_function(**function_args(name, CODE, CodeSigningConfigArn=arn))
    assert error_message(info) == (
        "Lambda cannot deploy the function. The function or layer might be signed using a "
        "signature that the client is not configured to accept. Check the provided signature "
        f"for arn:aws:lambda:us-east-1:000000000000:function:{name}.")
    with aws_error(lam, "ResourceNotFoundException"):
        lam.get_function(FunctionName=name)

    package = tmp_path / "function.zip"
    package.write_bytes(CODE)
    signed_path = tmp_path / "signed.zip"
    result = lamina_sign("--profile", profile_name(profile), str(package), "-o", str(signed_path))
    assert result.returncode == 0, result.stderr
    assert profile["profileVersionArn"] in result.stdout
    signed = signed_path.read_bytes()
    # The files are untouched: the signature is the archive's comment.
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        assert archive.namelist() == ["app.py"]
        assert archive.comment.startswith(b"LaminaCodeSignature/1 ")

    lam.create_function(**function_args(name, signed, CodeSigningConfigArn=arn))
    wait_active(lam, name)
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == arn
    answer = lam.invoke(FunctionName=name, Payload=b'{"n": 1}')
    assert json.loads(answer["Payload"].read()) == {"signed": True, "n": 1}

    # UpdateFunctionCode is checked too.
    with aws_error(lam, "CodeVerificationFailedException", 400):
        lam.update_function_code(FunctionName=name, ZipFile=CODE)
    lam.update_function_code(FunctionName=name, ZipFile=sign(signer, profile_name(profile), CODE))
    wait_updated(lam, name)


def test_a_tampered_package_is_refused_even_under_warn(lam: Any, signer: Any, profile: Any) -> None:
    arn = config(lam, [profile["profileVersionArn"]], "Warn")
    changed = tampered(sign(signer, profile_name(profile), CODE))
    with aws_error(lam, "InvalidCodeSignatureException", 400) as info:
        lam.create_function(**function_args(unique("csc-tampered"), changed, CodeSigningConfigArn=arn))
    assert "integrity check" in error_message(info)


def test_warn_deploys_an_unsigned_package_logs_and_counts_it(lam: Any, server: Any, profile: Any) -> None:
    arn = config(lam, [profile["profileVersionArn"]], "Warn")
    name = unique("csc-warn")
    lam.create_function(**function_args(name, CODE, CodeSigningConfigArn=arn))
    wait_active(lam, name)
    assert json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()) == {"signed": True}
    log = server.log_path.read_text(errors="replace")
    assert f"function:{name} is not signed; deployed under the Warn policy of {arn}" in log
    with urllib.request.urlopen(f"{server.endpoint}/metrics") as response:
        exposition = response.read().decode()
    assert f'lambda_signature_validation_errors_total{{function_name="{name}"}} 1.0' in exposition


def test_a_package_from_a_publisher_the_config_does_not_allow_is_refused(
        lam: Any, signer: Any, profile: Any) -> None:
    other = signer.put_signing_profile(profileName=unique("other_publisher"),
                                       platformId="AWSLambda-SHA384-ECDSA")
    arn = config(lam, [profile["profileVersionArn"]], "Enforce")
    with aws_error(lam, "CodeVerificationFailedException", 400):
        lam.create_function(**function_args(unique("csc-other"), sign(signer, profile_name(other), CODE),
                                            CodeSigningConfigArn=arn))


def test_a_revoked_profile_is_refused_for_signatures_after_its_effective_time(
        lam: Any, signer: Any) -> None:
    put = signer.put_signing_profile(profileName=unique("revoked"), platformId="AWSLambda-SHA384-ECDSA")
    name = profile_name(put)
    before = sign(signer, name, CODE)
    arn = config(lam, [put["profileVersionArn"]], "Enforce")
    # Revoked from an hour ago: the signature just made is not trusted any more.
    signer.revoke_signing_profile(profileName=name, profileVersion=put["profileVersion"],
                                  reason="key compromised", effectiveTime=time.time() - 3600)
    got = signer.get_signing_profile(profileName=name)
    assert got["status"] == "Revoked"
    assert got["statusReason"] == "key compromised"
    assert got["revocationRecord"]["revocationEffectiveFrom"].timestamp() == pytest.approx(time.time() - 3600, abs=60)
    with aws_error(lam, "CodeVerificationFailedException", 400):
        lam.create_function(**function_args(unique("csc-revoked"), before, CodeSigningConfigArn=arn))
    # A revoked profile signs nothing more.
    with aws_error(signer, "ValidationException", 400):
        sign(signer, name, CODE)


def test_signatures_made_before_a_revocation_takes_effect_stay_valid(lam: Any, signer: Any) -> None:
    put = signer.put_signing_profile(profileName=unique("revoked_later"), platformId="AWSLambda-SHA384-ECDSA")
    name = profile_name(put)
    signed = sign(signer, name, CODE)
    signer.revoke_signing_profile(profileName=name, profileVersion=put["profileVersion"],
                                  reason="retired", effectiveTime=time.time() + 3600)
    arn = config(lam, [put["profileVersionArn"]], "Enforce")
    function = unique("csc-before-revocation")
    lam.create_function(**function_args(function, signed, CodeSigningConfigArn=arn))
    wait_active(lam, function)


def test_layers_are_checked_when_a_function_with_a_config_uses_them(
        lam: Any, signer: Any, profile: Any) -> None:
    arn = config(lam, [profile["profileVersionArn"]], "Enforce")
    unsigned_layer = lam.publish_layer_version(LayerName=unique("csc-unsigned"), Content={"ZipFile": LAYER})
    signed_layer = lam.publish_layer_version(
        LayerName=unique("csc-signed"), Content={"ZipFile": sign(signer, profile_name(profile), LAYER)})
    code = sign(signer, profile_name(profile), CODE)

    name = unique("csc-layers")
    with aws_error(lam, "CodeVerificationFailedException", 400) as info:
        lam.create_function(**function_args(name, code, CodeSigningConfigArn=arn,
                                            Layers=[unsigned_layer["LayerVersionArn"]]))
    assert unsigned_layer["LayerVersionArn"] in error_message(info)
    lam.create_function(**function_args(name, code, CodeSigningConfigArn=arn,
                                        Layers=[signed_layer["LayerVersionArn"]]))
    wait_active(lam, name)
    with aws_error(lam, "CodeVerificationFailedException", 400):
        lam.update_function_configuration(FunctionName=name, Layers=[unsigned_layer["LayerVersionArn"]])

    # A signed layer changed after signing is refused when it is published.
    changed = tampered_layer(sign(signer, profile_name(profile), LAYER))
    with aws_error(lam, "InvalidCodeSignatureException", 400):
        lam.publish_layer_version(LayerName=unique("csc-tampered"), Content={"ZipFile": changed})


def tampered_layer(package: bytes) -> bytes:
    _digest, signature = read(package)
    assert signature is not None
    return embed(make_zip({"python/greeting.py": "HELLO = 'changed'\n"}), signature.to_comment())


# -- expiry, at a moment of the test's choosing ----------------------------------------------


def test_an_expired_signature_is_refused_under_enforce(tmp_path: Path) -> None:
    platform = Platform(Settings(data_dir=tmp_path / "data"))
    try:
        profiles = platform.signing_profiles
        put = profiles.put("expiring", "AWSLambda-SHA384-ECDSA", {"value": 1, "type": "DAYS"},
                           None, None, None, None)
        _job, signature = profiles.sign_digest("expiring", content_digest(CODE), DIGEST_PAYLOAD_FORMAT)
        assert signature.expires_at - signature.signed_at == 86400
        signed = embed(CODE, signature.to_comment())
        enforce = platform.code_signing.create(None, {"SigningProfileVersionArns": [put["profileVersionArn"]]},
                                               {"UntrustedArtifactOnDeployment": "Enforce"})
        platform.code_signing.check(enforce, "f", signed, [], now=signature.expires_at - 1)
        with pytest.raises(CodeVerificationFailedException):
            platform.code_signing.check(enforce, "f", signed, [], now=signature.expires_at)
    finally:
        platform.engine.dispose()


def test_deleting_a_function_frees_its_code_signing_config(lam: Any, profile: Any) -> None:
    arn = config(lam, [profile["profileVersionArn"]], "Warn")
    name = unique("csc-deleted")
    lam.create_function(**function_args(name, CODE, CodeSigningConfigArn=arn))
    assert len(lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"]) == 1
    lam.delete_function(FunctionName=name)
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == []
    lam.delete_code_signing_config(CodeSigningConfigArn=arn)


def test_the_aws_cli_drives_the_signer_and_code_signing_configs(
        server: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = clean_env(tmp_path_factory.mktemp("aws-signer-home"),
                    AWS_ACCESS_KEY_ID="cli", AWS_SECRET_ACCESS_KEY="cli")

    def aws(*args: str) -> dict[str, Any]:
        result = subprocess.run(
            [str(BIN / "aws"), *args, "--endpoint-url", server.endpoint, "--region", "us-east-1",
             "--output", "json"], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout or "{}")

    name = unique("cli_profile")
    put = aws("signer", "put-signing-profile", "--profile-name", name,
              "--platform-id", "AWSLambda-SHA384-ECDSA")
    assert aws("signer", "get-signing-profile", "--profile-name", name)["status"] == "Active"
    created = aws("lambda", "create-code-signing-config", "--allowed-publishers",
                  f"SigningProfileVersionArns={put['profileVersionArn']}",
                  "--code-signing-policies", "UntrustedArtifactOnDeployment=Enforce")
    assert created["CodeSigningConfig"]["AllowedPublishers"]["SigningProfileVersionArns"] == [
        put["profileVersionArn"]]


def test_code_signing_configs_carry_tags(lam: Any, profile: Any) -> None:
    created = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": [profile["profileVersionArn"]]},
        Tags={"team": "payments"})
    arn = created["CodeSigningConfig"]["CodeSigningConfigArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "payments"}
    lam.tag_resource(Resource=arn, Tags={"stage": "prod"})
    lam.untag_resource(Resource=arn, TagKeys=["team"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"stage": "prod"}
    lam.delete_code_signing_config(CodeSigningConfigArn=arn)
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.list_tags(Resource=arn)


def test_a_revoked_signature_is_refused_and_its_job_says_so(lam: Any, signer: Any, profile: Any) -> None:
    answer = signer.sign_payload(profileName=profile_name(profile), payload=content_digest(CODE),
                                 payloadFormat=DIGEST_PAYLOAD_FORMAT)
    signed = embed(CODE, answer["signature"])
    job = signer.describe_signing_job(jobId=answer["jobId"])
    assert (job["status"], job["profileName"], job["platformId"]) == (
        "Succeeded", profile_name(profile), "AWSLambda-SHA384-ECDSA")
    assert "revocationRecord" not in job
    signer.revoke_signature(jobId=answer["jobId"], reason="built from a bad commit")
    job = signer.describe_signing_job(jobId=answer["jobId"])
    assert job["revocationRecord"]["reason"] == "built from a bad commit"
    revoked = [j["jobId"] for j in signer.list_signing_jobs(isRevoked=True)["jobs"]]
    assert answer["jobId"] in revoked

    arn = config(lam, [profile["profileVersionArn"]], "Enforce")
    with aws_error(lam, "CodeVerificationFailedException", 400):
        lam.create_function(**function_args(unique("csc-revoked-signature"), signed, CodeSigningConfigArn=arn))
    with aws_error(signer, "ResourceNotFoundException", 404):
        signer.describe_signing_job(jobId="00000000-0000-0000-0000-000000000000")


def test_profiles_keys_and_configs_survive_a_restart(start_server: Any) -> None:
    srv = start_server(name="lamina-signing-restart")
    signer, lam = srv.client("signer"), srv.client()
    put = signer.put_signing_profile(profileName="kept", platformId="AWSLambda-SHA384-ECDSA")
    arn = config(lam, [put["profileVersionArn"]], "Enforce")
    before = sign(signer, "kept", CODE)
    srv.stop()
    srv.start()
    signer, lam = srv.client("signer"), srv.client()
    assert signer.get_signing_profile(profileName="kept")["profileVersion"] == put["profileVersion"]
    after = sign(signer, "kept", CODE)
    for name, package in (("made-before", before), ("made-after", after)):
        lam.create_function(**function_args(name, package, CodeSigningConfigArn=arn))
    with aws_error(lam, "CodeVerificationFailedException", 400):
        lam.create_function(**function_args("unsigned", CODE, CodeSigningConfigArn=arn))


def test_container_image_functions_cannot_have_code_signing(lam: Any, profile: Any) -> None:
    arn = config(lam, [profile["profileVersionArn"]], "Enforce")
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_function(FunctionName=unique("csc-image"), Role=ROLE, PackageType="Image",
                            Code={"ImageUri": "127.0.0.1:5000/lamina/hello:latest"},
                            CodeSigningConfigArn=arn)
    assert error_message(info) == "Code signing is not supported for functions created with container images."


def test_the_signer_checks_sigv4_with_its_own_signing_name(start_server: Any) -> None:
    srv = start_server({"LAMINA_ACCESS_KEYS": "AKIDSIGNER:signer-secret"}, name="lamina-signing-keys")
    signer = srv.client("signer", key="AKIDSIGNER", secret="signer-secret")
    signer.put_signing_profile(profileName="keyed", platformId="AWSLambda-SHA384-ECDSA")
    assert signer.get_signing_profile(profileName="keyed")["status"] == "Active"
    with aws_error(signer, "InvalidSignatureException", 403):
        srv.client("signer", key="AKIDSIGNER", secret="wrong").get_signing_profile(profileName="keyed")
    with aws_error(signer, "UnrecognizedClientException", 403):
        srv.client("signer", key="AKIDOTHER", secret="x").get_signing_profile(profileName="keyed")
