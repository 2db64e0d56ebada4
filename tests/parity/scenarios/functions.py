"""CreateFunction, GetFunction(Configuration), Update*, DeleteFunction, ListFunctions."""

from __future__ import annotations

from tests.parity.model import (
    ABSENT,
    ANY,
    Call,
    Including,
    Prefix,
    Scenario,
    Wait,
    create,
    function,
    make_zip,
    not_found,
)

API = "test_lambda_api.snapshot.json: "
CREATING = "The function is being created."

# The deterministic members of a new function's configuration (TestLambdaFunction::
# test_function_lifecycle, create_response), for <fn> as `function()` makes it.
CONFIGURATION = {
    "Architectures": ["x86_64"],
    "CodeSha256": ANY,
    "CodeSize": ANY,
    "Description": "",
    "EphemeralStorage": {"Size": 512},
    "FunctionArn": "<fn_arn>",
    "FunctionName": "<fn>",
    "Handler": "handler.handler",
    "LastModified": ANY,
    "LoggingConfig": {"LogFormat": "Text", "LogGroup": "/aws/lambda/<fn>"},
    "MemorySize": 128,
    "PackageType": "Zip",
    "RevisionId": ANY,
    "Role": "<role>",
    "Runtime": "python3.12",
    "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    "Timeout": 3,
    "TracingConfig": {"Mode": "PassThrough"},
    "Version": "$LATEST",
}
PENDING = {**CONFIGURATION, "State": "Pending", "StateReason": CREATING,
           "StateReasonCode": "Creating", "LastUpdateStatus": ABSENT}
ACTIVE = {**CONFIGURATION, "State": "Active", "StateReason": ABSENT, "StateReasonCode": ABSENT,
          "LastUpdateStatus": "Successful", "LastUpdateStatusReason": ABSENT}
UPDATING = {"State": "Active", "LastUpdateStatus": "InProgress",
            "LastUpdateStatusReason": CREATING, "LastUpdateStatusReasonCode": "Creating"}
ENUM = "failed to satisfy constraint: Member must satisfy enum value set: ["

SCENARIOS = [
    Scenario("create_function_answers_pending", API + "test_function_lifecycle/create_response", [
        Call("CreateFunction", function(), response=PENDING, status=201),
    ]),
    Scenario("create_function_with_settings", API + "test_function_lifecycle/create_response", [
        Call("CreateFunction", function(MemorySize=256, Timeout=5, Environment={"Variables": {}}),
             response={**PENDING, "MemorySize": 256, "Timeout": 5,
                       "Environment": {"Variables": {}}}, status=201),
    ]),
    Scenario("function_becomes_active", API + "test_function_lifecycle/get_function_response", [
        *create(),
        Call("GetFunction", {"FunctionName": "<fn>"},
             response={"Configuration": ACTIVE, "Code": {"RepositoryType": "S3", "Location": ANY}}),
        Call("GetFunctionConfiguration", {"FunctionName": "<fn>"}, response=ACTIVE),
    ]),
    Scenario("update_configuration_in_progress_then_successful",
             API + "test_function_lifecycle/update_func_conf_response", [
        *create(),
        Call("UpdateFunctionConfiguration",
             {"FunctionName": "<fn>", "Runtime": "python3.11", "Description": "Changed-Description",
              "MemorySize": 512, "Timeout": 10, "Environment": {"Variables": {"ENV_A": "a"}}},
             response={**UPDATING, "Runtime": "python3.11", "Description": "Changed-Description",
                       "MemorySize": 512, "Timeout": 10,
                       "Environment": {"Variables": {"ENV_A": "a"}}, "FunctionArn": "<fn_arn>"}),
        Wait("function_updated_v2", {"FunctionName": "<fn>"}),
        Call("GetFunctionConfiguration", {"FunctionName": "<fn>"},
             response={"LastUpdateStatus": "Successful", "LastUpdateStatusReason": ABSENT,
                       "State": "Active", "MemorySize": 512}),
    ]),
    Scenario("update_code_in_progress_then_successful",
             API + "test_function_lifecycle/update_code_response", [
        *create(),
        Call("UpdateFunctionCode",
             {"FunctionName": "<fn>", "ZipFile": make_zip({"handler.py": "def handler(e, c):\n    return 1\n"})},
             response={**UPDATING, "FunctionArn": "<fn_arn>", "Version": "$LATEST"}),
        Wait("function_updated_v2", {"FunctionName": "<fn>"}),
        Call("GetFunction", {"FunctionName": "<fn>"},
             response={"Configuration": {"LastUpdateStatus": "Successful", "State": "Active"}}),
    ]),
    Scenario("update_during_update_in_progress_conflicts",
             API + "test_lambda_concurrent_code_updates/update-during-in-progress-update-exc", [
        *create(),
        Call("UpdateFunctionConfiguration", {"FunctionName": "<fn>", "Description": "one"}),
        Call("UpdateFunctionConfiguration", {"FunctionName": "<fn>", "Description": "two"},
             error=("ResourceConflictException", 409,
                    "The operation cannot be performed at this time. An update is in progress "
                    "for resource: <fn_arn>")),
    ]),
    Scenario("delete_function_then_not_found", API + "test_function_lifecycle/delete_postdelete", [
        *create(),
        Call("DeleteFunction", {"FunctionName": "<fn>"}, status=204),
        Call("GetFunction", {"FunctionName": "<fn>"}, error=not_found("<fn_arn>")),
    ]),
    Scenario("delete_missing_function", API + "test_ops_on_nonexisting_fn[delete_function]", [
        Call("DeleteFunction", {"FunctionName": "<fn>"}, error=not_found("<fn_arn>")),
    ]),
    Scenario("get_missing_function", API + "test_invoke_exceptions / test_ops_on_nonexisting_fn", [
        Call("GetFunction", {"FunctionName": "<fn>"}, error=not_found("<fn_arn>")),
    ]),
    Scenario("get_missing_version", API + "test_ops_on_nonexisting_version[get_function]", [
        *create(),
        Call("GetFunction", {"FunctionName": "<fn>", "Qualifier": "1221"},
             error=not_found("<fn_arn>:1221")),
    ]),
    Scenario("qualifier_mismatch_is_refused", API + "test_ops_with_arn_qualifier_mismatch/not_match_exception", [
        Call("DeleteFunction", {"FunctionName": "<fn_arn>:1", "Qualifier": "$LATEST"},
             error=("InvalidParameterValueException", 400,
                    "The derived qualifier from the function name does not match the specified qualifier.")),
    ]),
    Scenario("qualifier_mismatch_on_get", API + "test_ops_with_arn_qualifier_mismatch[get_function]", [
        Call("GetFunction", {"FunctionName": "<fn_arn>:1", "Qualifier": "$LATEST"},
             error=("InvalidParameterValueException", 400,
                    "The derived qualifier from the function name does not match the specified qualifier.")),
    ]),
    Scenario("qualifier_match_on_missing_function", API + "test_ops_with_arn_qualifier_mismatch[get_function]/match_exception", [
        Call("GetFunction", {"FunctionName": "<fn_arn>:$LATEST", "Qualifier": "$LATEST"},
             error=not_found("<fn_arn>:$LATEST")),
    ]),
    Scenario("delete_latest_is_refused", API + "test_ops_with_arn_qualifier_mismatch[delete_function]/match_exception", [
        Call("DeleteFunction", {"FunctionName": "<fn_arn>:$LATEST", "Qualifier": "$LATEST"},
             error=("InvalidParameterValueException", 400,
                    "$LATEST version cannot be deleted without deleting the function.")),
    ]),
    Scenario("function_in_other_region_unreachable", API + "test_function_arns/function_arn_other_region_exc", [
        Call("CreateFunction", function(FunctionName="arn:aws:lambda:ap-southeast-1:<account>:function:<fn>"),
             error=("ResourceNotFoundException", 404,
                    "Functions from 'ap-southeast-1' are not reachable in this region ('<region>')")),
    ]),
    Scenario("get_function_in_other_region", API + "test_get_function_wrong_region[get_function]", [
        Call("GetFunction", {"FunctionName": "arn:aws:lambda:ap-southeast-1:<account>:function:<fn>"},
             error=("ResourceNotFoundException", 404,
                    "Functions from 'ap-southeast-1' are not reachable in this region ('<region>')")),
    ]),
    Scenario("function_name_65_characters", API + "test_function_arns/long_function_name_exc", [
        Call("CreateFunction", function(FunctionName="a" * 65),
             error=("InvalidParameterValueException", 400,
                    f"1 validation error detected: Value '{'a' * 65}' at 'functionName' failed to "
                    "satisfy constraint: Member must have length less than or equal to 64")),
    ]),
    Scenario("function_name_with_colons", API + "test_function_arns/invalid_function_name_exc", [
        Call("CreateFunction", function(FunctionName="invalid:function:name"),
             error=("ValidationException", 400, Prefix(
                 "1 validation error detected: Value 'invalid:function:name' at 'functionName' "
                 "failed to satisfy constraint: Member must satisfy regular expression pattern: "))),
    ]),
    Scenario("unknown_runtime", API + "test_create_lambda_exceptions/invalid_runtime_exc", [
        Call("CreateFunction", function(Runtime="non-existent-runtime"),
             error=("InvalidParameterValueException", 400,
                    Prefix(f"Value non-existent-runtime at 'runtime' {ENUM}"))),
    ]),
    Scenario("uppercase_runtime", API + "test_create_lambda_exceptions/uppercase_runtime_exc", [
        Call("CreateFunction", function(Runtime="PYTHON3.9"),
             error=("InvalidParameterValueException", 400, Prefix(f"Value PYTHON3.9 at 'runtime' {ENUM}"))),
    ]),
    Scenario("invalid_role", API + "test_create_lambda_exceptions/invalid_role_arn_exc", [
        Call("CreateFunction", function(Role="r1"),
             error=("ValidationException", 400,
                    "1 validation error detected: Value 'r1' at 'role' failed to satisfy constraint: "
                    "Member must satisfy regular expression pattern: "
                    r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")),
    ]),
    Scenario("two_architectures", API + "test_create_lambda_exceptions/multiple_architectures", [
        Call("CreateFunction", function(Architectures=["x86_64", "arm64"]),
             error=("ValidationException", 400,
                    "1 validation error detected: Value '[x86_64, arm64]' at 'architectures' failed "
                    "to satisfy constraint: Member must have length less than or equal to 1")),
    ]),
    Scenario("uppercase_architecture", API + "test_create_lambda_exceptions/uppercase_architecture", [
        Call("CreateFunction", function(Architectures=["X86_64"]),
             error=("ValidationException", 400,
                    "1 validation error detected: Value '[X86_64]' at 'architectures' failed to "
                    "satisfy constraint: Member must satisfy constraint: [Member must satisfy enum "
                    "value set: [x86_64, arm64], Member must not be null]")),
    ]),
    Scenario("code_not_a_zip", API + "test_create_lambda_exceptions/invalid_zip_exc", [
        Call("CreateFunction", function(Code={"ZipFile": b"this is not a zip file"}),
             error=("InvalidParameterValueException", 400,
                    "Could not unzip uploaded file. Please check your file, then try to upload again.")),
    ]),
    Scenario("snapstart_invalid_apply_on", API + "test_snapstart_exceptions/create_function_invalid_snapstart_apply", [
        Call("CreateFunction", function(SnapStart={"ApplyOn": "invalidOption"}),
             error=("ValidationException", 400,
                    "1 validation error detected: Value 'invalidOption' at 'snapStart.applyOn' failed "
                    "to satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]")),
    ]),
    Scenario("environment_over_4_kb", API + "test_large_environment_variables_fails", [
        Call("CreateFunction", function(Environment={"Variables": {"LARGE_VAR": "x" * 4096}}),
             error=("InvalidParameterValueException", 400,
                    "Lambda was unable to configure your environment variables because the "
                    "environment variables you have provided exceeded the 4KB limit. String "
                    'measured: {"LARGE_VAR":"' + "x" * 4096 + '"}')),
    ]),
    Scenario("missing_layer_version", API + "test_layer_function_exceptions/add_nonexistent_layer_exc", [
        Call("CreateFunction", function(Layers=["arn:aws:lambda:<region>:<account>:layer:doesnotexist:1"]),
             error=("InvalidParameterValueException", 400,
                    "Layer version arn:aws:lambda:<region>:<account>:layer:doesnotexist:1 does not exist.")),
    ]),
    Scenario("layer_in_other_region", API + "test_layer_function_exceptions/create_function_with_layer_in_different_region", [
        Call("CreateFunction", function(Layers=["arn:aws:lambda:eu-west-1:<account>:layer:<layer>:1"]),
             error=("InvalidParameterValueException", 400,
                    "Layers are not in the same region as the function. Layers are expected to be "
                    "in region <region>.")),
    ]),
    Scenario("list_functions_invalid_function_version", API + "test_list_functions/list_functions_invalid_functionversion", [
        Call("ListFunctions", {"FunctionVersion": "invalid"},
             error=("ValidationException", 400,
                    "1 validation error detected: Value 'invalid' at 'functionVersion' failed to "
                    "satisfy constraint: Member must satisfy enum value set: [ALL]")),
    ]),
    Scenario("update_configuration_of_missing_function", API + "test_ops_on_nonexisting_fn", [
        Call("UpdateFunctionConfiguration", {"FunctionName": "<fn>", "Description": "x"},
             error=not_found("<fn_arn>")),
    ]),
    Scenario("update_code_image_uri_on_zip_function", API + "test_lambda_zip_file_to_image/zipfile-to-image-error", [
        *create(),
        Call("UpdateFunctionCode", {"FunctionName": "<fn>", "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:latest"},
             error=("InvalidParameterValueException", 400,
                    "Please don't provide ImageUri when updating a function with packageType Zip.")),
    ]),
]

SCENARIOS += [
    Scenario("list_functions", API + "test_list_functions/list_default, list_all", [
        *create(),
        Call("PublishVersion", {"FunctionName": "<fn>"}),
        Call("ListFunctions", {}, response={"Functions": Including([
            {"FunctionArn": "<fn_arn>", "Version": "$LATEST", "FunctionName": "<fn>"}])}),
        Call("ListFunctions", {"FunctionVersion": "ALL"}, response={"Functions": Including([
            {"FunctionArn": "<fn_arn>:$LATEST", "Version": "$LATEST"},
            {"FunctionArn": "<fn_arn>:1", "Version": "1"}])}),
    ]),
]
