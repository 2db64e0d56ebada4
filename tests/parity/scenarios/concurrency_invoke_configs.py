"""Reserved and provisioned concurrency, event invoke configs."""

from __future__ import annotations

from tests.parity.model import (
    ABSENT,
    ANY,
    Call,
    Scenario,
    Wait,
    create,
    function,
    not_found,
)

API = "test_lambda_api.snapshot.json: "
ALIAS_NOT_FOUND = "Cannot find alias arn: "
NO_CONFIG = "The function <fn_arn>:{} doesn't have an EventInvokeConfig"


def publish() -> list[Call | Wait]:
    return [*create(), Call("PublishVersion", {"FunctionName": "<fn>"})]


SCENARIOS = [
    Scenario("reserved_concurrency_lifecycle", API + "test_function_concurrency", [
        *create(),
        Call("PutFunctionConcurrency", {"FunctionName": "<fn>", "ReservedConcurrentExecutions": 0},
             response={"ReservedConcurrentExecutions": 0}, status=200),
        Call("PutFunctionConcurrency", {"FunctionName": "<fn>", "ReservedConcurrentExecutions": 1},
             response={"ReservedConcurrentExecutions": 1}),
        Call("GetFunctionConcurrency", {"FunctionName": "<fn>"}, response={"ReservedConcurrentExecutions": 1}),
        Call("DeleteFunctionConcurrency", {"FunctionName": "<fn>"}, status=204),
        Call("GetFunctionConcurrency", {"FunctionName": "<fn>"},
             response={"ReservedConcurrentExecutions": ABSENT}),
    ]),
    Scenario("reserved_concurrency_missing_function", API + "test_function_concurrency_exceptions/put_function_concurrency_with_function_name_doesnotexist", [
        Call("PutFunctionConcurrency", {"FunctionName": "<fn>", "ReservedConcurrentExecutions": 1},
             error=not_found("<fn_arn>:$LATEST")),
    ]),
    Scenario("reserved_concurrency_on_qualified_arn", API + "test_function_concurrency_exceptions/put_function_concurrency_with_qualified_arn", [
        *create(),
        Call("PutFunctionConcurrency", {"FunctionName": "<fn_arn>:$LATEST", "ReservedConcurrentExecutions": 1},
             error=("InvalidParameterValueException", 400,
                    "This operation is permitted on Lambda functions only. Aliases and versions do "
                    "not support this operation. Please specify either a function name or an "
                    "unqualified function ARN.")),
    ]),
    Scenario("provisioned_concurrency_on_version", API + "test_lambda_provisioned_lifecycle/put_provisioned_on_version", [
        *publish(),
        Call("PutProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "1",
                                                 "ProvisionedConcurrentExecutions": 1},
             response={"AllocatedProvisionedConcurrentExecutions": 0,
                       "AvailableProvisionedConcurrentExecutions": 0, "LastModified": ANY,
                       "RequestedProvisionedConcurrentExecutions": 1, "Status": "IN_PROGRESS"},
             status=202),
        Call("DeleteProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "1"}, status=204),
        Call("GetProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "1"},
             error=("ProvisionedConcurrencyConfigNotFoundException", 404,
                    "No Provisioned Concurrency Config found for this function")),
    ]),
    Scenario("provisioned_concurrency_on_latest", API + "test_provisioned_concurrency_exceptions/put_provisioned_latest", [
        *create(),
        Call("PutProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "$LATEST",
                                                 "ProvisionedConcurrentExecutions": 1},
             error=("InvalidParameterValueException", 400,
                    "Provisioned Concurrency Configs cannot be applied to unpublished function versions.")),
    ]),
    Scenario("get_provisioned_concurrency_of_latest", API + "test_provisioned_concurrency_exceptions/get_provisioned_latest", [
        *create(),
        Call("GetProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "$LATEST"},
             error=("InvalidParameterValueException", 400,
                    "The function resource provided must be an alias or a published version.")),
    ]),
    Scenario("provisioned_concurrency_zero", API + "test_provisioned_concurrency_exceptions/put_provisioned_invalid_param_0", [
        *publish(),
        Call("PutProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "1",
                                                 "ProvisionedConcurrentExecutions": 0},
             error=("ValidationException", 400,
                    "1 validation error detected: Value '0' at 'provisionedConcurrentExecutions' "
                    "failed to satisfy constraint: Member must have value greater than or equal to 1")),
    ]),
    Scenario("provisioned_concurrency_missing_alias", API + "test_provisioned_concurrency_exceptions/put_provisioned_qualifier_doesnotexist", [
        *publish(),
        Call("PutProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "doesnotexist",
                                                 "ProvisionedConcurrentExecutions": 1},
             error=("ResourceNotFoundException", 404, ALIAS_NOT_FOUND + "<fn_arn>:doesnotexist")),
    ]),
    Scenario("provisioned_concurrency_missing_version", API + "test_provisioned_concurrency_exceptions/put_provisioned_version_doesnotexist", [
        *publish(),
        Call("PutProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "10",
                                                 "ProvisionedConcurrentExecutions": 1},
             error=not_found("<fn_arn>:10")),
    ]),
    Scenario("get_provisioned_concurrency_none", API + "test_provisioned_concurrency_exceptions/get_provisioned_config_doesnotexist", [
        *publish(),
        Call("GetProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "1"},
             error=("ProvisionedConcurrencyConfigNotFoundException", 404,
                    "No Provisioned Concurrency Config found for this function")),
    ]),
    Scenario("get_provisioned_concurrency_missing_alias", API + "test_provisioned_concurrency_exceptions/get_provisioned_qualifier_doesnotexist", [
        *publish(),
        Call("GetProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "noalias"},
             error=("ResourceNotFoundException", 404, ALIAS_NOT_FOUND + "<fn_arn>:noalias")),
    ]),
    Scenario("delete_provisioned_concurrency_none", API + "test_provisioned_concurrency_exceptions/delete_provisioned_config_doesnotexist", [
        *publish(),
        Call("DeleteProvisionedConcurrencyConfig", {"FunctionName": "<fn>", "Qualifier": "1"}, status=204),
    ]),
    Scenario("list_provisioned_concurrency_none", API + "test_provisioned_concurrency_exceptions/list_provisioned_noconfigs", [
        *publish(),
        Call("ListProvisionedConcurrencyConfigs", {"FunctionName": "<fn>"},
             response={"ProvisionedConcurrencyConfigs": []}),
    ]),
    Scenario("list_provisioned_concurrency_missing_function", API + "test_provisioned_concurrency_exceptions/list_provisioned_functionname_doesnotexist", [
        Call("ListProvisionedConcurrencyConfigs", {"FunctionName": "<fn>"}, error=not_found("<fn_arn>")),
    ]),
    Scenario("event_invoke_config_lifecycle", API + "test_lambda_eventinvokeconfig_lifecycle/put_invokeconfig_retries_0", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 0},
             response={"DestinationConfig": {"OnFailure": {}, "OnSuccess": {}},
                       "FunctionArn": "<fn_arn>:$LATEST", "LastModified": ANY,
                       "MaximumRetryAttempts": 0}, status=200),
        Call("GetFunctionEventInvokeConfig", {"FunctionName": "<fn>"},
             response={"FunctionArn": "<fn_arn>:$LATEST", "MaximumRetryAttempts": 0}),
        Call("DeleteFunctionEventInvokeConfig", {"FunctionName": "<fn>"}, status=204),
    ]),
    Scenario("event_invoke_config_missing", API + "test_ops_on_nonexisting_fn[get_function_event_invoke_config]", [
        Call("GetFunctionEventInvokeConfig", {"FunctionName": "<fn>"},
             error=("ResourceNotFoundException", 404, NO_CONFIG.format("$LATEST"))),
    ]),
    Scenario("event_invoke_config_missing_version", API + "test_ops_on_nonexisting_version[get_function_event_invoke_config]", [
        *create(),
        Call("GetFunctionEventInvokeConfig", {"FunctionName": "<fn>", "Qualifier": "1221"},
             error=("ResourceNotFoundException", 404, NO_CONFIG.format("1221"))),
    ]),
    Scenario("event_invoke_config_after_publish", API + "test_lambda_eventinvokeconfig_lifecycle/get_invokeconfig_postpublish", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 1}),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("GetFunctionEventInvokeConfig", {"FunctionName": "<fn>", "Qualifier": "1"},
             error=("ResourceNotFoundException", 404, NO_CONFIG.format("1"))),
    ]),
    Scenario("delete_missing_event_invoke_config", API + "test_lambda_eventinvokeconfig_exceptions/delete_function_not_found", [
        *create(),
        Call("DeleteFunctionEventInvokeConfig", {"FunctionName": "<fn>"},
             error=("ResourceNotFoundException", 404, NO_CONFIG.format("$LATEST"))),
    ]),
    Scenario("event_invoke_config_on_missing_alias", API + "test_lambda_eventinvokeconfig_exceptions/get_qualifier_doesnotexist", [
        *create(),
        Call("GetFunctionEventInvokeConfig", {"FunctionName": "<fn>", "Qualifier": "doesnotexist"},
             error=("ResourceNotFoundException", 404, NO_CONFIG.format("doesnotexist"))),
    ]),
    Scenario("put_event_invoke_config_missing_function", API + "test_lambda_eventinvokeconfig_exceptions/put_functionname_name_notfound", [
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 1},
             error=("ResourceNotFoundException", 404, "The function doesn't exist.")),
    ]),
    Scenario("put_event_invoke_config_without_settings", API + "test_lambda_eventinvokeconfig_exceptions/put_functionname_nootherargs", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>"},
             error=("InvalidParameterValueException", 400,
                    "You must specify at least one of error handling or destination setting.")),
    ]),
    Scenario("event_invoke_config_destination_is_itself", API + "test_lambda_eventinvokeconfig_exceptions/put_destination_recursive", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "DestinationConfig": {
            "OnSuccess": {"Destination": "<fn_arn>"}}},
             error=("InvalidParameterValueException", 400,
                    "You can't specify the function as a destination for itself.")),
    ]),
    Scenario("event_invoke_config_destination_missing_function", API + "test_lambda_eventinvokeconfig_exceptions/put_destination_lambda_doesntexist", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "DestinationConfig": {
            "OnSuccess": {"Destination": "arn:aws:lambda:<region>:<account>:function:doesnotexist"}}},
             error=("InvalidParameterValueException", 400,
                    "The destination ARN arn:aws:lambda:<region>:<account>:function:doesnotexist is invalid.")),
    ]),
]

EIC = API + "test_lambda_eventinvokeconfig_"
SCENARIOS += [
    Scenario("event_invoke_config_update_and_list", EIC + "lifecycle/update_invokeconfig_retries, list_single_invokeconfig", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumEventAgeInSeconds": 60},
             response={"DestinationConfig": {"OnFailure": {}, "OnSuccess": {}},
                       "FunctionArn": "<fn_arn>:$LATEST", "MaximumEventAgeInSeconds": 60,
                       "MaximumRetryAttempts": ABSENT}),
        Call("UpdateFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 1},
             response={"DestinationConfig": {"OnFailure": {}, "OnSuccess": {}},
                       "FunctionArn": "<fn_arn>:$LATEST", "LastModified": ANY,
                       "MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 1}),
        Call("ListFunctionEventInvokeConfigs", {"FunctionName": "<fn>"}, response={
            "FunctionEventInvokeConfigs": [{
                "DestinationConfig": {"OnFailure": {}, "OnSuccess": {}},
                "FunctionArn": "<fn_arn>:$LATEST", "LastModified": ANY,
                "MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 1}]}),
    ]),
    Scenario("event_invoke_config_maximum_values", EIC + "exceptions/put_maxevent_maxvalue_result", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 2,
                                              "MaximumEventAgeInSeconds": 21600},
             response={"FunctionArn": "<fn_arn>:$LATEST", "MaximumEventAgeInSeconds": 21600,
                       "MaximumRetryAttempts": 2}),
    ]),
    Scenario("event_invoke_config_empty_destination", EIC + "exceptions/put_destination_success_no_destination_arn", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "DestinationConfig": {"OnSuccess": {}}},
             response={"DestinationConfig": {"OnFailure": {}, "OnSuccess": {}},
                       "FunctionArn": "<fn_arn>:$LATEST"}),
    ]),
    Scenario("event_invoke_config_destination_other_function", EIC + "exceptions/put_destination_other_lambda", [
        *create(),
        Call("CreateFunction", {**function(), "FunctionName": "<fn>-other"}),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "DestinationConfig": {
            "OnSuccess": {"Destination": "<fn_arn>-other"}}},
             response={"DestinationConfig": {"OnFailure": {}, "OnSuccess": {"Destination": "<fn_arn>-other"}},
                       "FunctionArn": "<fn_arn>:$LATEST"}),
        Call("DeleteFunction", {"FunctionName": "<fn>-other"}),
    ]),
    Scenario("event_invoke_config_destination_of_another_service", EIC + "exceptions/put_destination_invalid_service_arn", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "DestinationConfig": {
            "OnSuccess": {"Destination": "arn:aws:iam:<region>:<account>:function:<fn>"}}},
             error=("InvalidParameterValueException", 400,
                    "The provided destination config DestinationConfig(onSuccess=OnSuccess("
                    "destination=arn:aws:iam:<region>:<account>:function:<fn>), onFailure=null) is invalid.")),
    ]),
    Scenario("event_invoke_config_qualifier_mismatch", EIC + "exceptions/put_shorthand_qualifier_mismatch_1", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>:1", "Qualifier": "$LATEST",
                                              "MaximumRetryAttempts": 1},
             error=("InvalidParameterValueException", 400,
                    "The derived qualifier from the function name does not match the specified qualifier.")),
    ]),
    Scenario("event_invoke_config_missing_alias_put", EIC + "exceptions/put_alias_doesnotexist", [
        *create(),
        Call("PutFunctionEventInvokeConfig", {"FunctionName": "<fn>", "Qualifier": "doesnotexist",
                                              "MaximumRetryAttempts": 1},
             error=("ResourceNotFoundException", 404, "The function doesn't exist.")),
    ]),
    Scenario("event_invoke_config_list_missing_function", EIC + "exceptions/list_function_doesnotexist", [
        Call("ListFunctionEventInvokeConfigs", {"FunctionName": "<fn>"},
             error=("ResourceNotFoundException", 404, "The function doesn't exist.")),
    ]),
    Scenario("event_invoke_config_update_missing_function", EIC + "exceptions/update_eventinvokeconfig_function_doesnotexist", [
        Call("UpdateFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 1},
             error=("ResourceNotFoundException", 404, "The function doesn't exist.")),
    ]),
    Scenario("event_invoke_config_update_missing_config", EIC + "exceptions/update_eventinvokeconfig_config_doesnotexist_without_qualifier", [
        *create(),
        Call("UpdateFunctionEventInvokeConfig", {"FunctionName": "<fn>", "MaximumRetryAttempts": 1},
             error=("ResourceNotFoundException", 404, NO_CONFIG.format("$LATEST"))),
    ]),
]
