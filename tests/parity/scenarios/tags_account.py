"""TagResource, UntagResource, ListTags, GetAccountSettings."""

from __future__ import annotations

from tests.parity.model import ANY, Call, Scenario, create, function, not_found

API = "test_lambda_api.snapshot.json: "

SCENARIOS = [
    Scenario("tag_lifecycle", API + "TestLambdaTags::test_tag_lifecycle", [
        *create(),
        Call("TagResource", {"Resource": "<fn_arn>", "Tags": {"A": "tag-a", "B": "tag-b"}}, status=204),
        Call("ListTags", {"Resource": "<fn_arn>"}, response={"Tags": {"A": "tag-a", "B": "tag-b"}}),
        Call("GetFunction", {"FunctionName": "<fn>"}, response={"Tags": {"A": "tag-a", "B": "tag-b"}}),
        Call("UntagResource", {"Resource": "<fn_arn>", "TagKeys": ["A"]}, status=204),
        Call("ListTags", {"Resource": "<fn_arn>"}, response={"Tags": {"B": "tag-b"}}),
    ]),
    Scenario("tag_missing_function", API + "test_tag_exceptions/tag_lambda_doesnotexist", [
        Call("TagResource", {"Resource": "<fn_arn>", "Tags": {"A": "a"}}, error=not_found("<fn_arn>")),
    ]),
    Scenario("tag_version_arn", API + "test_tag_exceptions/tag_lambda_qualifier_doesnotexist", [
        *create(),
        Call("TagResource", {"Resource": "<fn_arn>:v1", "Tags": {"A": "a"}},
             error=("InvalidParameterValueException", 400,
                    "Tags on function aliases and versions are not supported. Please specify a function ARN.")),
    ]),
    Scenario("tag_with_no_tags", API + "test_tag_exceptions/tag_empty_tags", [
        *create(),
        Call("TagResource", {"Resource": "<fn_arn>", "Tags": {}},
             error=("InvalidParameterValueException", 400,
                    "An error occurred and the request cannot be processed.")),
    ]),
    Scenario("untag_without_keys", API + "test_tag_exceptions/untag_empty_keys", [
        *create(),
        Call("UntagResource", {"Resource": "<fn_arn>"},
             error=("ValidationException", 400,
                    "1 validation error detected: Value null at 'tagKeys' failed to satisfy "
                    "constraint: Member must not be null")),
    ]),
    Scenario("too_many_tags", API + "test_tag_limits/tag_lambda_too_many_tags", [
        *create(),
        Call("TagResource", {"Resource": "<fn_arn>", "Tags": {f"{i}k": f"{i}v" for i in range(51)}},
             error=("InvalidParameterValueException", 400, "Number of tags exceeds resource tag limit.")),
    ]),
    Scenario("create_function_with_too_many_tags", API + "test_tag_limits (CreateFunction)", [
        Call("CreateFunction", {**function(),
                                "Tags": {f"{i}k": f"{i}v" for i in range(51)}},
             error=("InvalidParameterValueException", 400, "Number of tags exceeds resource tag limit.")),
    ]),
    Scenario("account_settings", API + "test_account_settings/acc_settings_modded", [
        Call("GetAccountSettings", {}, response={
            "AccountLimit": {"CodeSizeUnzipped": ANY, "CodeSizeZipped": ANY, "ConcurrentExecutions": ANY,
                             "TotalCodeSize": ANY, "UnreservedConcurrentExecutions": ANY},
            "AccountUsage": {"FunctionCount": ANY, "TotalCodeSize": ANY}}, status=200),
    ]),
]
