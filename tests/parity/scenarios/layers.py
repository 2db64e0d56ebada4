"""Layers: publish, get, list, delete, and layer version permissions."""

from __future__ import annotations

from tests.parity.model import (
                                       ANY,
                                       Call,
                                       Prefix,
                                       Scenario,
                                       Wait,
                                       create,
                                       function,
                                       make_zip,
)

API = "test_lambda_api.snapshot.json: "
CONTENT = {"ZipFile": make_zip({"python/lib.py": "VALUE = 1\n"})}
PUBLISH = Call("PublishLayerVersion", {"LayerName": "<layer>", "Content": CONTENT,
                                       "CompatibleRuntimes": ["python3.12"],
                                       "CompatibleArchitectures": ["x86_64"]})
NO_RESOURCE = ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
BELOW_ONE = ("InvalidParameterValueException", 400, "Layer Version Cannot be less than 1")

SCENARIOS = [
    Scenario("publish_layer_version", API + "test_layer_lifecycle/publish_result", [
        Call("PublishLayerVersion", {"LayerName": "<layer>", "Content": CONTENT,
                                     "CompatibleRuntimes": ["python3.12"],
                                     "CompatibleArchitectures": ["x86_64"],
                                     "Description": "d", "LicenseInfo": "MIT"},
             response={"CompatibleArchitectures": ["x86_64"], "CompatibleRuntimes": ["python3.12"],
                       "Content": {"CodeSha256": ANY, "CodeSize": ANY, "Location": ANY},
                       "CreatedDate": ANY, "Description": "d", "LayerArn": "<layer_arn>",
                       "LayerVersionArn": "<layer_arn>:1", "LicenseInfo": "MIT", "Version": 1},
             status=201),
        Call("GetLayerVersion", {"LayerName": "<layer>", "VersionNumber": 1},
             response={"LayerVersionArn": "<layer_arn>:1", "Version": 1}),
        Call("GetLayerVersionByArn", {"Arn": "<layer_arn>:1"},
             response={"LayerVersionArn": "<layer_arn>:1", "Version": 1}),
    ]),
    Scenario("publish_layer_without_compatibility", API + "test_layer_exceptions/publish_empty_result", [
        Call("PublishLayerVersion", {"LayerName": "<layer>", "Content": CONTENT},
             response={"CompatibleArchitectures": [], "CompatibleRuntimes": [], "Description": "",
                       "Version": 1}, status=201),
    ]),
    Scenario("list_layer_versions_of_missing_layer", API + "test_layer_exceptions/list_nonexistent_layer", [
        Call("ListLayerVersions", {"LayerName": "<layer>"}, response={"LayerVersions": []}),
    ]),
    Scenario("get_layer_version_of_missing_layer", API + "test_layer_exceptions/get_layer_version_exc_layer_doesnotexist", [
        Call("GetLayerVersion", {"LayerName": "<layer>", "VersionNumber": 1}, error=NO_RESOURCE),
    ]),
    Scenario("get_layer_version_zero", API + "test_layer_exceptions/get_layer_version_exc_layer_version_doesnotexist_zero", [
        PUBLISH,
        Call("GetLayerVersion", {"LayerName": "<layer>", "VersionNumber": 0}, error=BELOW_ONE),
    ]),
    Scenario("get_layer_version_negative", API + "test_layer_exceptions/get_layer_version_exc_layer_version_doesnotexist_negative", [
        PUBLISH,
        Call("GetLayerVersion", {"LayerName": "<layer>", "VersionNumber": -1}, error=BELOW_ONE),
    ]),
    Scenario("get_missing_layer_version", API + "test_layer_exceptions/get_layer_version_exc_layer_version_doesnotexist_2", [
        PUBLISH,
        Call("GetLayerVersion", {"LayerName": "<layer>", "VersionNumber": 2}, error=NO_RESOURCE),
    ]),
    Scenario("get_missing_layer_version_by_arn", API + "test_layer_exceptions/get_layer_version_by_arn_exc_nonexistentversion", [
        PUBLISH,
        Call("GetLayerVersionByArn", {"Arn": "<layer_arn>:2"}, error=NO_RESOURCE),
    ]),
    Scenario("get_layer_version_by_unversioned_arn", API + "test_layer_exceptions/get_layer_version_by_arn_exc_invalidarn", [
        PUBLISH,
        Call("GetLayerVersionByArn", {"Arn": "<layer_arn>"},
             error=("ValidationException", 400, Prefix(
                 "1 validation error detected: Value '<layer_arn>' at 'arn' failed to satisfy "
                 "constraint: Member must satisfy regular expression pattern: "))),
    ]),
    Scenario("delete_missing_layer_version", API + "test_layer_exceptions/delete_nonexistent_response", [
        Call("DeleteLayerVersion", {"LayerName": "<layer>", "VersionNumber": 1}, status=204),
    ]),
    Scenario("delete_layer_version_zero", API + "test_layer_exceptions/delete_layer_version_exc_layerversion_invalid_version", [
        Call("DeleteLayerVersion", {"LayerName": "<layer>", "VersionNumber": 0}, error=BELOW_ONE),
    ]),
    Scenario("list_layers_unknown_architecture", API + "test_layer_exceptions/list_layers_exc_compatiblearchitecture_invalid", [
        Call("ListLayers", {"CompatibleArchitecture": "archdoesnotexist"},
             error=("ValidationException", 400,
                    "1 validation error detected: Value 'archdoesnotexist' at 'compatibleArchitecture' "
                    "failed to satisfy constraint: Member must satisfy enum value set: [x86_64, arm64]")),
    ]),
    Scenario("list_layers_unknown_runtime", API + "test_layer_exceptions/list_layers_exc_compatibleruntime_invalid", [
        Call("ListLayers", {"CompatibleRuntime": "runtimedoesnotexist"},
             error=("ValidationException", 400, Prefix(
                 "1 validation error detected: Value 'runtimedoesnotexist' at 'compatibleRuntime' "
                 "failed to satisfy constraint: Member must satisfy enum value set: ["))),
    ]),
    Scenario("publish_layer_unknown_runtime_and_architecture", API + "test_layer_exceptions/publish_layer_version_exc_invalid_runtime_arch", [
        Call("PublishLayerVersion", {"LayerName": "<layer>", "Content": CONTENT,
                                     "CompatibleRuntimes": ["invalidruntime"],
                                     "CompatibleArchitectures": ["invalidarch"]},
             error=("ValidationException", 400, Prefix(
                 "2 validation errors detected: Value '[invalidruntime]' at 'compatibleRuntimes' "
                 "failed to satisfy constraint: Member must satisfy enum value set: ["))),
    ], known_difference="AWS reports compatibleRuntimes before compatibleArchitectures; Lamina "
                        "follows the model's member order, which lists architectures first"),
    Scenario("layer_permission_lifecycle", API + "test_layer_policy_lifecycle/add_policy_s1", [
        PUBLISH,
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1, "StatementId": "s1",
                                           "Action": "lambda:GetLayerVersion", "Principal": "*"},
             response={"RevisionId": ANY, "Statement": '{"Sid":"s1","Effect":"Allow","Principal":"*",'
                       '"Action":"lambda:GetLayerVersion","Resource":"<layer_arn>:1"}'}, status=201),
        Call("GetLayerVersionPolicy", {"LayerName": "<layer>", "VersionNumber": 1},
             response={"RevisionId": ANY, "Policy": '{"Version":"2012-10-17","Id":"default","Statement":'
                       '[{"Sid":"s1","Effect":"Allow","Principal":"*","Action":"lambda:GetLayerVersion",'
                       '"Resource":"<layer_arn>:1"}]}'}),
        Call("RemoveLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1,
                                              "StatementId": "s1"}, status=204),
    ]),
    Scenario("layer_permission_duplicate_statement", API + "test_layer_policy_exceptions/layer_permission_duplicate_statement", [
        PUBLISH,
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1, "StatementId": "s1",
                                           "Action": "lambda:GetLayerVersion", "Principal": "*"}),
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1, "StatementId": "s1",
                                           "Action": "lambda:GetLayerVersion", "Principal": "*"},
             error=("ResourceConflictException", 409,
                    "The statement id (s1) provided already exists. Please provide a new statement "
                    "id, or remove the existing statement.")),
    ]),
    Scenario("layer_permission_wrong_action", API + "test_layer_policy_exceptions/layer_permission_action_invalid", [
        PUBLISH,
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1, "StatementId": "s1",
                                           "Action": "*", "Principal": "*"},
             error=("ValidationException", 400,
                    "1 validation error detected: Value '*' at 'action' failed to satisfy constraint: "
                    "Member must satisfy regular expression pattern: lambda:GetLayerVersion")),
    ]),
    Scenario("layer_permission_wrong_revision", API + "test_layer_policy_exceptions/layer_permission_wrong_revision", [
        PUBLISH,
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1, "StatementId": "s1",
                                           "Action": "lambda:GetLayerVersion", "Principal": "*",
                                           "RevisionId": "wrong"},
             error=("PreconditionFailedException", 412,
                    "The Revision Id provided does not match the latest Revision Id. Call the "
                    "GetLayerPolicy API to retrieve the latest Revision Id")),
    ]),
    Scenario("layer_permission_missing_version", API + "test_layer_policy_exceptions/layer_permission_layerversion_doesnotexist_add", [
        PUBLISH,
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 2, "StatementId": "s1",
                                           "Action": "lambda:GetLayerVersion", "Principal": "*"},
             error=("ResourceNotFoundException", 404, "Layer version <layer_arn>:2 does not exist.")),
    ]),
    Scenario("layer_permission_missing_statement", API + "test_layer_policy_exceptions/layer_permission_statementid_doesnotexist_remove", [
        PUBLISH,
        Call("AddLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1, "StatementId": "s1",
                                           "Action": "lambda:GetLayerVersion", "Principal": "*"}),
        Call("RemoveLayerVersionPermission", {"LayerName": "<layer>", "VersionNumber": 1,
                                              "StatementId": "doesnotexist"},
             error=("ResourceNotFoundException", 404,
                    "Statement doesnotexist is not found in resource policy.")),
    ]),
]

SCENARIOS += [
    Scenario("list_layer_versions_newest_first", API + "test_layer_lifecycle/list_layer_versions_predelete", [
        PUBLISH,
        PUBLISH,
        Call("ListLayerVersions", {"LayerName": "<layer>"}, response={"LayerVersions": [
            {"CompatibleArchitectures": ["x86_64"], "CompatibleRuntimes": ["python3.12"],
             "CreatedDate": ANY, "LayerVersionArn": "<layer_arn>:2", "Version": 2},
            {"CompatibleArchitectures": ["x86_64"], "CompatibleRuntimes": ["python3.12"],
             "CreatedDate": ANY, "LayerVersionArn": "<layer_arn>:1", "Version": 1}]}),
    ]),
    Scenario("function_with_layer", API + "test_layer_lifecycle/get_fn_config", [
        PUBLISH,
        *create(),
        Call("UpdateFunctionConfiguration", {"FunctionName": "<fn>", "Layers": ["<layer_arn>:1"]},
             response={"Layers": [{"Arn": "<layer_arn>:1", "CodeSize": ANY}]}),
        Wait("function_updated_v2", {"FunctionName": "<fn>"}),
        Call("DeleteLayerVersion", {"LayerName": "<layer>", "VersionNumber": 1}, status=204),
        # A function keeps the layer version it uses after the version is deleted.
        Call("GetFunctionConfiguration", {"FunctionName": "<fn>"},
             response={"Layers": [{"Arn": "<layer_arn>:1", "CodeSize": ANY}], "State": "Active"}),
    ]),
    Scenario("two_versions_of_one_layer", API + "test_layer_function_exceptions/two_layer_versions_single_function_exc", [
        PUBLISH,
        PUBLISH,
        Call("CreateFunction", {**function(),
                                "Layers": ["<layer_arn>:1", "<layer_arn>:2"]},
             error=("InvalidParameterValueException", 400,
                    "Two different versions of the same layer are not allowed to be referenced in the "
                    "same function. <layer_arn>:1 and <layer_arn>:2 are versions of the same layer.")),
    ]),
]
