"""PublishVersion, ListVersionsByFunction, and aliases."""

from __future__ import annotations

from tests.parity.model import (
    ABSENT,
    ANY,
    Call,
    Matches,
    Scenario,
    Wait,
    create,
    function,
    not_found,
)

API = "test_lambda_api.snapshot.json: "
PUBLISHED = {
    "FunctionArn": "<fn_arn>:1", "FunctionName": "<fn>", "Version": "1",
    "Description": "First version description :)", "RevisionId": ANY, "CodeSha256": ANY,
}

SCENARIOS = [
    Scenario("publish_version", API + "test_version_lifecycle/first_publish_response", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>", "Description": "First version description :)"},
             response={**PUBLISHED, "State": "Active", "LastUpdateStatus": "Successful"}, status=201),
        Wait("published_version_active", {"FunctionName": "<fn>", "Qualifier": "1"}),
        Call("GetFunctionConfiguration", {"FunctionName": "<fn>", "Qualifier": "1"}, response=PUBLISHED),
    ]),
    Scenario("create_function_with_publish_returns_unqualified_arn",
             API + "TestLambdaVersions::test_publish_version_on_create", [
        Call("CreateFunction", function(Publish=True),
             response={"FunctionArn": "<fn_arn>", "Version": "1", "State": "Pending"}, status=201),
        Wait("published_version_active", {"FunctionName": "<fn>", "Qualifier": "1"}),
        Call("GetFunctionConfiguration", {"FunctionName": "<fn>", "Qualifier": "1"},
             response={"FunctionArn": "<fn_arn>:1", "Version": "1", "State": "Active"}),
    ]),
    Scenario("list_versions", API + "test_version_lifecycle/list_versions_result", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("ListVersionsByFunction", {"FunctionName": "<fn>"}, response={
            "Versions": [{"FunctionArn": "<fn_arn>:$LATEST", "Version": "$LATEST"},
                         {"FunctionArn": "<fn_arn>:1", "Version": "1"}]}),
    ]),
    Scenario("publish_with_wrong_revision_id", API + "test_publish_with_wrong_revisionid", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>", "RevisionId": "wrong"},
             error=("PreconditionFailedException", 412,
                    "The Revision Id provided does not match the latest Revision Id. Call the "
                    "GetFunction/GetAlias API to retrieve the latest Revision Id")),
    ]),
    Scenario("publish_with_wrong_sha256", API + "test_publish_with_wrong_sha256", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>", "CodeSha256": "somenonexistentsha256"},
             error=("InvalidParameterValueException", 400, Matches(
                 r"CodeSHA256 \(somenonexistentsha256\) is different from current CodeSHA256 in "
                 r"\$LATEST \(.+\)\. Please try again with the CodeSHA256 in \$LATEST\."))),
    ]),
    Scenario("delete_missing_version", API + "test_delete_on_nonexisting_version", [
        *create(),
        Call("DeleteFunction", {"FunctionName": "<fn>", "Qualifier": "1"}, status=204),
    ]),
    Scenario("alias_lifecycle", API + "test_alias_lifecycle/create_alias_1_2", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "aliasname1_2", "FunctionVersion": "1",
                             "Description": "custom-alias"},
             response={"AliasArn": "<fn_arn>:aliasname1_2", "Description": "custom-alias",
                       "FunctionVersion": "1", "Name": "aliasname1_2", "RevisionId": ANY,
                       "RoutingConfig": ABSENT}, status=201),
        Call("GetAlias", {"FunctionName": "<fn>", "Name": "aliasname1_2"},
             response={"AliasArn": "<fn_arn>:aliasname1_2", "FunctionVersion": "1"}),
        Call("GetFunction", {"FunctionName": "<fn>", "Qualifier": "aliasname1_2"},
             response={"Configuration": {"FunctionArn": "<fn_arn>:aliasname1_2", "Version": "1"}}),
        Call("DeleteAlias", {"FunctionName": "<fn>", "Name": "aliasname1_2"}, status=204),
    ]),
    Scenario("alias_with_routing_config", API + "test_alias_lifecycle/create_alias_1_1", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("UpdateFunctionConfiguration", {"FunctionName": "<fn>", "Description": "v2"}),
        Wait("function_updated_v2", {"FunctionName": "<fn>"}),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "aliasname1_1", "FunctionVersion": "1",
                             "Description": "custom-alias",
                             "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.2}}},
             response={"AliasArn": "<fn_arn>:aliasname1_1", "FunctionVersion": "1",
                       "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.2}}}, status=201),
    ]),
    Scenario("get_function_missing_alias", API + "test_alias_lifecycle/get_function_alias_notfound_exc", [
        *create(),
        Call("GetFunction", {"FunctionName": "<fn>", "Qualifier": "aliasdoesnotexist"},
             error=not_found("<fn_arn>:aliasdoesnotexist")),
    ]),
    Scenario("get_missing_alias", API + "test_notfound_and_invalid_routingconfigs/alias_does_not_exist_esc", [
        *create(),
        Call("GetAlias", {"FunctionName": "<fn>", "Name": "non-existent"},
             error=("ResourceNotFoundException", 404, "Cannot find alias arn: <fn_arn>:non-existent")),
    ]),
    Scenario("update_missing_alias", API + "test_non_existent_alias_update/update_alias_response", [
        *create(),
        Call("UpdateAlias", {"FunctionName": "<fn>", "Name": "non-existent"},
             error=("ResourceNotFoundException", 404, "Alias not found: <fn_arn>:non-existent")),
    ]),
    Scenario("alias_to_missing_version", API + "test_notfound_and_invalid_routingconfigs/target_version_doesnotexist", [
        *create(),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "10"},
             error=not_found("<fn_arn>:10")),
    ]),
    Scenario("alias_of_missing_function", API + "test_notfound_and_invalid_routingconfigs/routing_config_exc_fn_doesnotexist", [
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1"},
             error=not_found("<fn_arn>:1")),
    ]),
    Scenario("alias_exists", API + "test_notfound_and_invalid_routingconfigs/routing_config_exc_already_exist", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1"},
             error=("ResourceConflictException", 409, "Alias already exists: <fn_arn>:custom")),
    ]),
    Scenario("alias_routing_weight_too_high", API + "test_notfound_and_invalid_routingconfigs/routing_config_exc_toohigh", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1",
                             "RoutingConfig": {"AdditionalVersionWeights": {"2": 2}}},
             error=("ValidationException", 400,
                    "1 validation error detected: Value '{2=2.0}' at 'routingConfig.additionalVersionWeights' "
                    "failed to satisfy constraint: Map value must satisfy constraint: [Member must have "
                    "value less than or equal to 1.0, Member must have value greater than or equal to "
                    "0.0, Member must not be null]")),
    ]),
    Scenario("alias_routing_weight_below_zero", API + "test_notfound_and_invalid_routingconfigs/routing_config_exc_subzero", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1",
                             "RoutingConfig": {"AdditionalVersionWeights": {"2": -1}}},
             error=("ValidationException", 400,
                    "1 validation error detected: Value '{2=-1.0}' at 'routingConfig.additionalVersionWeights' "
                    "failed to satisfy constraint: Map value must satisfy constraint: [Member must have "
                    "value less than or equal to 1.0, Member must have value greater than or equal to "
                    "0.0, Member must not be null]")),
    ]),
    Scenario("alias_routing_same_version", API + "test_notfound_and_invalid_routingconfigs/routing_config_exc_sameversion", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1",
                             "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}},
             error=("InvalidParameterValueException", 400,
                    "Invalid function version 1. Function version 1 is already included in routing configuration.")),
    ]),
    Scenario("alias_routing_too_many_versions", API + "test_notfound_and_invalid_routingconfigs/routing_config_exc_toomany", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1",
                             "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5, "3": 0.2}}},
             error=("InvalidParameterValueException", 400,
                    "Number of items in AdditionalVersionWeights cannot be greater than 1")),
    ]),
    Scenario("alias_routing_from_latest", API + "test_notfound_and_invalid_routingconfigs/target_version_exc_version_latest", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "$LATEST",
                             "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}},
             error=("InvalidParameterValueException", 400,
                    "$LATEST is not supported for an alias pointing to more than 1 version")),
    ]),
    Scenario("alias_name_all_digits", API + "test_alias_naming/create_alias_number_exception", [
        *create(),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "2024", "FunctionVersion": "$LATEST"},
             error=("ValidationException", 400,
                    "1 validation error detected: Value '2024' at 'name' failed to satisfy constraint: "
                    "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)")),
    ]),
]

SCENARIOS += [
    Scenario("list_aliases", API + "test_alias_lifecycle/list_aliases_for_version", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "aliasname1_1", "FunctionVersion": "1",
                             "Description": "custom-alias"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "aliasname1_3", "FunctionVersion": "1"}),
        Call("ListAliases", {"FunctionName": "<fn>", "FunctionVersion": "1"}, response={"Aliases": [
            {"AliasArn": "<fn_arn>:aliasname1_1", "Description": "custom-alias", "FunctionVersion": "1",
             "Name": "aliasname1_1", "RevisionId": ANY},
            {"AliasArn": "<fn_arn>:aliasname1_3", "Description": "", "FunctionVersion": "1",
             "Name": "aliasname1_3", "RevisionId": ANY}]}),
    ]),
    Scenario("update_alias", API + "test_alias_lifecycle/update_alias_1_1", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("CreateAlias", {"FunctionName": "<fn>", "Name": "custom", "FunctionVersion": "1"}),
        Call("UpdateAlias", {"FunctionName": "<fn>", "Name": "custom", "Description": "changed"},
             response={"AliasArn": "<fn_arn>:custom", "Description": "changed", "FunctionVersion": "1",
                       "Name": "custom", "RevisionId": ANY}, status=200),
    ]),
]

SCENARIOS += [
    Scenario("update_code_with_publish", API + "TestLambdaVersions::test_publish_with_update/update_function_code_result", [
        *create(),
        Call("UpdateFunctionCode", {"FunctionName": "<fn>", "Publish": True, "ZipFile": function()["Code"]["ZipFile"]},
             response={"FunctionArn": "<fn_arn>:1", "Version": "1", "State": "Pending",
                       "LastUpdateStatus": ABSENT}),
        Wait("published_version_active", {"FunctionName": "<fn>", "Qualifier": "1"}),
        Call("GetFunctionConfiguration", {"FunctionName": "<fn>", "Qualifier": "1"},
             response={"State": "Active", "LastUpdateStatus": "Successful"}),
    ]),
]
