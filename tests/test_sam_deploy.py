"""`lamina deploy template.yaml`: SAM templates deployed as stacks on a real server."""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.helpers import BIN, clean_env, function_names


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build cache for the module: what `sam build` built once is reused."""
    return tmp_path_factory.mktemp("build-cache")


@pytest.fixture
def lamina(server, cache, tmp_path):
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, cwd: Path | None = None, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "lamina"), *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=600,
            env=clean_env(home, LAMINA_ENDPOINT=server.endpoint, XDG_CACHE_HOME=str(cache),
                          XDG_STATE_HOME=str(home / "state")),
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


# The files `sam init --runtime python3.13 --app-template hello-world` writes (the
# template's comments shortened).
HELLO_TEMPLATE = """
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Description: >
  sam-app

  Sample SAM Template for sam-app

# More info about Globals: https://github.com/awslabs/serverless-application-model/blob/master/docs/globals.rst
Globals:
  Function:
    Timeout: 3

Resources:
  HelloWorldFunction:
    Type: AWS::Serverless::Function # More info about Function Resource: ...
    Properties:
      CodeUri: hello_world/
      Handler: app.lambda_handler
      Runtime: python3.13
      Architectures:
        - x86_64
      Events:
        HelloWorld:
          Type: Api # More info about API Event Source: ...
          Properties:
            Path: /hello
            Method: get

Outputs:
  # ServerlessRestApi is an implicit API created out of Events key under Serverless::Function
  HelloWorldApi:
    Description: "API Gateway endpoint URL for Prod stage for Hello World function"
    Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/Prod/hello/"
  HelloWorldFunction:
    Description: "Hello World Lambda Function ARN"
    Value: !GetAtt HelloWorldFunction.Arn
  HelloWorldFunctionIamRole:
    Description: "Implicit IAM Role created for Hello World function"
    Value: !GetAtt HelloWorldFunctionRole.Arn
"""

HELLO_APP = '''
import json

# import requests


def lambda_handler(event, context):
    """Sample pure Lambda function"""

    # try:
    #     ip = requests.get("http://checkip.amazonaws.com/")
    # except requests.RequestException as e:
    #     # Send some context about this error to Lambda Logs
    #     print(e)

    #     raise e

    return {
        "statusCode": 200,
        "body": json.dumps({
            "message": "hello world",
            # "location": ip.text.replace("\\n", "")
        }),
    }
'''


def url_get(url: str) -> tuple[int, str]:
    """GET a function URL through its path form on loopback (no DNS for *.localhost needed)."""
    host = url.split("//", 1)[1].split("/", 1)[0]
    url_id, port = host.split(".", 1)[0], host.rsplit(":", 1)[1]
    path = url.split(host, 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/lambda-url/{url_id}{path}", timeout=30) as response:
        return response.status, response.read().decode()


def package_files(lam, name: str) -> set[str]:
    location = lam.get_function(FunctionName=name)["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=30) as response:
        return set(zipfile.ZipFile(io.BytesIO(response.read())).namelist())


@pytest.mark.slow
def test_sam_init_hello_world_deploys_unchanged_and_serves_its_api_route(lamina, lam, tmp_path):
    app = write(tmp_path / "sam-app", {
        "template.yaml": HELLO_TEMPLATE, "hello_world/app.py": HELLO_APP,
        "hello_world/__init__.py": "", "hello_world/requirements.txt": "requests\n",
    })
    first = lamina("deploy", "--no-confirm", cwd=app)
    assert "+ Add" in first.stdout and "HelloWorldFunction" in first.stdout
    assert "Successfully created/updated stack sam-app" in first.stdout
    config = lam.get_function_configuration(FunctionName="sam-app-HelloWorldFunction")
    assert (config["Runtime"], config["Handler"], config["Timeout"]) == ("python3.13", "app.lambda_handler", 3)
    assert config["FunctionArn"] in first.stdout          # the HelloWorldFunction output
    # requirements.txt was installed into the package, as sam build does
    assert any(name.startswith("requests/") for name in package_files(lam, "sam-app-HelloWorldFunction"))
    answer = json.loads(lam.invoke(FunctionName="sam-app-HelloWorldFunction", Payload=b"{}")["Payload"].read())
    assert json.loads(answer["body"]) == {"message": "hello world"}
    route = next(line for line in first.stdout.splitlines() if line.strip().startswith("GET /hello"))
    status, body = url_get(route.rsplit(": ", 1)[1].strip())
    assert status == 200 and json.loads(body) == {"message": "hello world"}
    again = lamina("deploy", "--no-confirm", cwd=app)
    assert "No changes to deploy" in again.stdout
    assert "(cached)" in again.stdout
    listed = lamina("stacks").stdout
    assert "sam-app" in listed


NODE_STACK = """
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    AllowedValues: [dev, prod]
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Mappings:
  Sizes:
    dev: {Memory: 256}
    prod: {Memory: 512}
Globals:
  Function:
    Runtime: nodejs20.x
    Timeout: 10
    MemorySize: !FindInMap [Sizes, !Ref Stage, Memory]
    Environment:
      Variables:
        STAGE: !Ref Stage
Resources:
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 30
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: shared/
      CompatibleRuntimes: [nodejs20.x]
      RetentionPolicy: Delete
  Api:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: api/
      Handler: index.handler
      AutoPublishAlias: live
      Layers: [!Ref Shared]
      FunctionUrlConfig:
        AuthType: NONE
      Environment:
        Variables:
          QUEUE_URL: !Ref Jobs
          GREETING: !If [IsProd, hello, !Join ["-", [hi, !Select [0, [there, nobody]]]]]
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: worker/
      Handler: index.handler
      Events:
        FromJobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 5
        Nightly:
          Type: Schedule
          Properties:
            Schedule: rate(1 day)
            Input: '{"nightly": true}'
Outputs:
  ApiUrl:
    Value: !GetAtt ApiUrl.FunctionUrl
  QueueArn:
    Value: !Sub "${Jobs.Arn}"
"""


def node_app(root: Path, greeting_suffix: str = "") -> Path:
    return write(root, {
        "template.yaml": NODE_STACK,
        "samconfig.toml": """
            version = 0.1
            [default.deploy.parameters]
            stack_name = "shop"
            parameter_overrides = "Stage=dev"
        """,
        "shared/nodejs/node_modules/shared/index.js": "exports.name = 'shared';\n",
        "api/package.json": '{"name": "api", "version": "1.0.0", "dependencies": {"ms": "2.1.3"}}\n',
        "api/index.js": """
            const ms = require('ms');
            const shared = require('/opt/nodejs/node_modules/shared');
            exports.handler = async () => ({statusCode: 200, body: JSON.stringify({
              greeting: process.env.GREETING, stage: process.env.STAGE, day: ms('1d'),
              shared: shared.name, queue: process.env.QUEUE_URL%s})});
        """ % greeting_suffix,
        "worker/index.js": "exports.handler = async (event) => ({records: (event.Records || []).length});\n",
    })


@pytest.mark.slow
def test_nodejs_stack_with_layer_queue_events_url_then_one_change_then_delete(lamina, lam, server, tmp_path):
    app = node_app(tmp_path / "shop")
    first = lamina("deploy", "--no-confirm", cwd=app)
    assert "Successfully created/updated stack shop" in first.stdout, first.stdout
    api = lam.get_function_configuration(FunctionName="shop-Api")
    assert (api["Runtime"], api["MemorySize"], api["Timeout"]) == ("nodejs20.x", 256, 10)
    assert api["Environment"]["Variables"]["GREETING"] == "hi-there"
    assert len(api["Layers"]) == 1 and ":layer:Shared:" in api["Layers"][0]["Arn"]
    assert lam.get_alias(FunctionName="shop-Api", Name="live")["FunctionVersion"] == "1"
    url = lam.get_function_url_config(FunctionName="shop-Api", Qualifier="live")["FunctionUrl"]
    assert url in first.stdout                              # the ApiUrl output
    status, body = url_get(url)
    answer = json.loads(body)
    assert status == 200 and answer["day"] == 86_400_000 and answer["shared"] == "shared"
    assert answer["queue"].endswith("/shop-Jobs")
    mappings = lam.list_event_source_mappings(FunctionName="shop-Worker")["EventSourceMappings"]
    assert len(mappings) == 1 and mappings[0]["BatchSize"] == 5
    assert mappings[0]["EventSourceArn"].endswith(":shop-Jobs")
    events = server.client("events")
    assert events.describe_rule(Name="shop-WorkerNightly")["ScheduleExpression"] == "rate(1 day)"
    sqs = server.client("sqs")
    sqs.send_message(QueueUrl=answer["queue"], MessageBody="job")
    logs = server.client("logs")
    _wait_for_log(logs, "/aws/lambda/shop-Worker", "START RequestId")

    # One handler changes: one function, its alias (a new version) and nothing else.
    worker_before = lam.get_function_configuration(FunctionName="shop-Worker")
    node_app(tmp_path / "shop", greeting_suffix=", v: 2")
    second = lamina("deploy", "--no-confirm", cwd=app)
    changes = [line for line in second.stdout.splitlines() if "Modify" in line or "Add" in line or "Remove" in line]
    assert len(changes) == 2, second.stdout
    assert any("ApiAliaslive" in line for line in changes) and any(" Api " in f" {line} " for line in changes)
    assert lam.get_alias(FunctionName="shop-Api", Name="live")["FunctionVersion"] == "2"
    assert json.loads(url_get(url)[1])["v"] == 2
    worker_after = lam.get_function_configuration(FunctionName="shop-Worker")
    assert worker_after["RevisionId"] == worker_before["RevisionId"]

    deleted = lamina("stack", "delete", "shop", "--no-confirm")
    assert "deleted stack shop" in deleted.stdout
    names = function_names(lam)
    assert not {"shop-Api", "shop-Worker"} & names
    assert not [q for q in sqs.list_queues().get("QueueUrls", []) if q.endswith("/shop-Jobs")]
    assert not [r for r in events.list_rules()["Rules"] if r["Name"] == "shop-WorkerNightly"]
    assert not lam.list_layer_versions(LayerName="Shared")["LayerVersions"]
    assert "shop" not in lamina("stacks").stdout


def _wait_for_log(logs, group: str, text: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            found = logs.filter_log_events(logGroupName=group)["events"]
        except logs.exceptions.ResourceNotFoundException:
            found = []
        if any(text in event["message"] for event in found):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {group}")


BROKEN = """
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Fine:
    Type: AWS::Serverless::Function
    Properties:
      InlineCode: "def handler(e, c): return 1"
      Handler: index.handler
      Runtime: python3.11
  Broken:
    Type: AWS::Serverless::Function
    Properties:
      InlineCode: "def handler(e, c): return 1"
      Handler: index.handler
      Runtime: python3.11
      MemorySise: 256
      Environment:
        Variables:
          OTHER: !GetAtt Fine.Url
      Events:
        Bucket:
          Type: S3
          Properties:
            Bucket: uploads
"""


def test_template_errors_are_reported_with_their_lines_and_nothing_changes(lamina, lam, tmp_path):
    app = write(tmp_path / "broken", {"template.yaml": BROKEN})
    before = function_names(lam)
    result = lamina("deploy", "--no-confirm", cwd=app, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "template.yaml:16: unknown property 'MemorySise' of AWS::Serverless::Function Broken" in output
    assert "template.yaml:19: Fn::GetAtt Fine.Url: AWS::Serverless::Function has the attributes Arn" in output
    assert "template.yaml:22: event Bucket of Broken: event type S3 is not supported by Lamina" in output
    assert "nothing was changed" in output
    assert function_names(lam) == before
    assert "broken" not in lamina("stacks").stdout


def test_inline_code_stack_and_parameter_overrides(lamina, lam, tmp_path):
    app = write(tmp_path / "inline", {"template.yaml": """
        Parameters:
          Greeting: {Type: String, Default: hello}
        Resources:
          FnRole:
            Type: AWS::IAM::Role
            Properties:
              RoleName: greeter
              AssumeRolePolicyDocument: {Version: "2012-10-17", Statement: []}
          Fn:
            Type: AWS::Lambda::Function
            Properties:
              FunctionName: !Sub "${AWS::StackName}-greeter"
              Runtime: python3.11
              Handler: index.handler
              Role: !GetAtt FnRole.Arn
              Code:
                ZipFile: |
                  import os
                  def handler(event, context):
                      return os.environ["GREETING"]
              Environment:
                Variables: {GREETING: !Ref Greeting}
    """})
    lamina("deploy", "--no-confirm", "--stack-name", "inline", "--parameter-overrides", "Greeting=bonjour", cwd=app)
    answer = lam.invoke(FunctionName="inline-greeter", Payload=b"{}")["Payload"].read()
    assert json.loads(answer) == "bonjour"
    assert lam.get_function_configuration(FunctionName="inline-greeter")["Role"].endswith(":role/greeter")
    refused = lamina("deploy", "--no-confirm", "--stack-name", "inline", "--parameter-overrides", "Nope=1",
                     cwd=app, check=False)
    assert refused.returncode != 0 and "Nope" in refused.stderr
    lamina("stack", "delete", "inline", "--no-confirm")
    assert "inline-greeter" not in function_names(lam)


def test_a_failed_deploy_rolls_back_what_it_made(lamina, lam, tmp_path):
    app = write(tmp_path / "failing", {"template.yaml": """
        Resources:
          First:
            Type: AWS::Serverless::Function
            Properties:
              InlineCode: "def handler(e, c): return 1"
              Handler: index.handler
              Runtime: python3.11
          Second:
            Type: AWS::Serverless::Function
            DependsOn: First
            Properties:
              InlineCode: "def handler(e, c): return 1"
              Handler: index.handler
              Runtime: python3.11
              MemorySize: 99999
    """})
    result = lamina("deploy", "--no-confirm", cwd=app, check=False)
    assert result.returncode != 0
    assert "rolled back" in result.stderr and "memorySize" in result.stderr
    assert "ROLLBACK_COMPLETE" in result.stdout
    names = function_names(lam)
    assert "failing-First" not in names and "failing-Second" not in names


# -- the CLI's papercuts --------------------------------------------------------------


def test_deploy_dir_keeps_the_runtime_and_handler_it_is_not_given(lamina, lam, tmp_path):
    source = write(tmp_path / "fn", {"index.js": "exports.handler = async () => 'node';\n"})
    lamina("deploy", str(source), "--name", "cli-keeps-runtime", "--runtime", "nodejs20.x",
           "--handler", "index.handler")
    (source / "index.js").write_text("exports.handler = async () => 'node again';\n")
    lamina("deploy", str(source), "--name", "cli-keeps-runtime", "--memory", "256")
    config = lam.get_function_configuration(FunctionName="cli-keeps-runtime")
    assert (config["Runtime"], config["Handler"], config["MemorySize"]) == ("nodejs20.x", "index.handler", 256)


def test_invoke_payload_from_a_file_and_from_stdin(lamina, lam, tmp_path):
    source = write(tmp_path / "echo", {"app.py": "def handler(event, context):\n    return len(event['data'])\n"})
    lamina("deploy", str(source), "--name", "cli-big-payload")
    event = json.dumps({"data": "x" * 300_000})        # past what one argument may hold
    (tmp_path / "event.json").write_text(event)
    assert lamina("invoke", "cli-big-payload", "--payload", f"@{tmp_path / 'event.json'}").stdout.strip() == "300000"
    assert lamina("invoke", "cli-big-payload", "--payload", "-", stdin=event).stdout.strip() == "300000"


def test_functions_table_fits_80_columns_without_cutting_runtimes(lamina, server, tmp_path):
    source = write(tmp_path / "narrow", {"app.py": "def handler(e, c):\n    return 1\n"})
    lamina("deploy", str(source), "--name", "cli-narrow-terminal", "--runtime", "python3.13")
    home = tmp_path / "narrow-home"
    home.mkdir()
    result = subprocess.run([str(BIN / "lamina"), "functions"], capture_output=True, text=True, timeout=60,
                            env={**clean_env(home, LAMINA_ENDPOINT=server.endpoint), "COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    row = next(line for line in lines if "cli-narrow-terminal" in line)
    assert "python3.13" in row


def test_help_has_examples(lamina):
    assert "lamina deploy" in lamina("--help").stdout and "Examples" in lamina("--help").stdout


MAKE_STACK = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Deps:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: deps/
      CompatibleRuntimes: [python3.11]
      RetentionPolicy: Delete
    Metadata:
      BuildMethod: python3.11
  Made:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: made/
      Handler: app.handler
      Runtime: python3.11
      Layers: [!Ref Deps]
      AutoPublishAlias: live
      DeploymentPreference:
        Type: Canary10Percent5Minutes
      Events:
        Tick:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(5 minutes)
    Metadata:
      BuildMethod: makefile
"""


@pytest.mark.slow
def test_makefile_build_python_layer_schedule_v2_and_a_canary_alias(lamina, lam, server, tmp_path):
    app = write(tmp_path / "made", {
        "template.yaml": MAKE_STACK,
        "deps/requirements.txt": "six==1.16.0\n",
        "made/app.py": "import six\n\ndef handler(event, context):\n"
                       "    return open('made.txt').read().strip() + ' ' + six.__version__\n",
        "made/Makefile": "build-Made:\n\tcp app.py $(ARTIFACTS_DIR)/\n"
                         "\techo 'built by make' > $(ARTIFACTS_DIR)/made.txt\n",
    })
    first = lamina("deploy", "--no-confirm", cwd=app)
    assert "$ make" in first.stdout and "$ python" in first.stdout       # the build's progress
    answer = lam.invoke(FunctionName="made-Made", Qualifier="live", Payload=b"{}")["Payload"].read()
    assert json.loads(answer) == "built by make 1.16.0"
    schedule = server.client("scheduler").get_schedule(Name="made-MadeTick")
    assert schedule["ScheduleExpression"] == "rate(5 minutes)"
    assert schedule["Target"]["Arn"].endswith(":made-Made:live")

    (app / "made" / "app.py").write_text("def handler(event, context):\n    return 'v2'\n")
    second = lamina("deploy", "--no-confirm", cwd=app)
    assert "10% of invocations to version 2" in second.stdout
    alias = lam.get_alias(FunctionName="made-Made", Name="live")
    assert alias["FunctionVersion"] == "1"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}

    lamina("stack", "delete", "made", "--no-confirm")
    assert not [s for s in server.client("scheduler").list_schedules()["Schedules"] if s["Name"] == "made-MadeTick"]
    assert not lam.list_layer_versions(LayerName="Deps")["LayerVersions"]


def test_function_settings_from_sam_properties(lamina, lam, server, tmp_path):
    app = write(tmp_path / "settings", {"template.yaml": """
        Transform: AWS::Serverless-2016-10-31
        Globals:
          Function:
            Runtime: python3.11
            Handler: index.handler
            Environment:
              Variables: {SHARED: "1"}
          HttpApi:
            CorsConfiguration: {AllowOrigins: ["*"]}
        Resources:
          Failures:
            Type: AWS::SQS::Queue
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              InlineCode: "def handler(event, context):\\n    return event\\n"
              MemorySize: 256
              EphemeralStorage: {Size: 1024}
              ReservedConcurrentExecutions: 3
              Tracing: Active
              LoggingConfig: {LogFormat: JSON}
              DeadLetterQueue: {Type: SQS, TargetArn: !GetAtt Failures.Arn}
              EventInvokeConfig:
                MaximumRetryAttempts: 1
                DestinationConfig:
                  OnFailure: {Type: SQS, Destination: !GetAtt Failures.Arn}
              Policies: [AWSLambdaBasicExecutionRole]
              Environment:
                Variables: {OWN: "2"}
              Events:
                Web:
                  Type: HttpApi
                  Properties: {Path: /items, Method: post}
          Warm:
            Type: AWS::Serverless::Function
            Properties:
              InlineCode: "def handler(event, context):\\n    return 'warm'\\n"
              AutoPublishAlias: live
              ProvisionedConcurrencyConfig: {ProvisionedConcurrentExecutions: 1}
    """})
    out = lamina("deploy", "--no-confirm", cwd=app).stdout
    assert "Policies ignored" in out and "Globals: HttpApi ignored" in out
    assert "POST /items -> Fn" in out
    config = lam.get_function_configuration(FunctionName="settings-Fn")
    assert config["Environment"]["Variables"] == {"SHARED": "1", "OWN": "2"}
    assert (config["MemorySize"], config["EphemeralStorage"]["Size"]) == (256, 1024)
    assert config["TracingConfig"]["Mode"] == "Active" and config["LoggingConfig"]["LogFormat"] == "JSON"
    assert config["DeadLetterConfig"]["TargetArn"].endswith(":settings-Failures")
    assert lam.get_function_concurrency(FunctionName="settings-Fn")["ReservedConcurrentExecutions"] == 3
    invoke_config = lam.get_function_event_invoke_config(FunctionName="settings-Fn")
    assert invoke_config["MaximumRetryAttempts"] == 1
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"].endswith(":settings-Failures")
    assert lam.get_function_url_config(FunctionName="settings-Fn")["AuthType"] == "NONE"
    provisioned = lam.get_provisioned_concurrency_config(FunctionName="settings-Warm", Qualifier="live")
    assert provisioned["RequestedProvisionedConcurrentExecutions"] == 1
    tags = lam.list_tags(Resource=config["FunctionArn"])["Tags"]
    assert tags["lamina:stack-name"] == "settings" and tags["lamina:logical-id"] == "Fn"
    lamina("stack", "delete", "settings", "--no-confirm")


ROLLBACK_STACK = """
Transform: AWS::Serverless-2016-10-31
Resources:
  First:
    Type: AWS::Serverless::Function
    Properties:
      InlineCode: "def handler(e, c):\\n    return '%s'\\n"
      Handler: index.handler
      Runtime: python3.11
      Timeout: %d
  Second:
    Type: AWS::Serverless::Function
    DependsOn: First
    Properties:
      InlineCode: "def handler(e, c):\\n    return 2\\n"
      Handler: index.handler
      Runtime: python3.11
      MemorySize: %d
"""


def test_a_failed_update_gives_updated_functions_back_their_code_and_configuration(lamina, lam, tmp_path):
    app = tmp_path / "undo"
    write(app, {"template.yaml": ROLLBACK_STACK % ("v1", 3, 128)})
    lamina("deploy", "--no-confirm", cwd=app)
    write(app, {"template.yaml": ROLLBACK_STACK % ("v2", 9, 99999)})
    failed = lamina("deploy", "--no-confirm", cwd=app, check=False)
    assert failed.returncode != 0 and "UPDATE_COMPLETE" in failed.stdout and "ROLLBACK_COMPLETE  First" in failed.stdout
    assert json.loads(lam.invoke(FunctionName="undo-First", Payload=b"{}")["Payload"].read()) == "v1"
    assert lam.get_function_configuration(FunctionName="undo-First")["Timeout"] == 3
    # A function whose own configuration is refused gets its new code taken back too.
    write(app, {"template.yaml": ROLLBACK_STACK.replace("Timeout: %d", "Timeout: %d\n      MemorySize: 99999")
                % ("v3", 3, 128)})
    assert lamina("deploy", "--no-confirm", cwd=app, check=False).returncode != 0
    assert json.loads(lam.invoke(FunctionName="undo-First", Payload=b"{}")["Payload"].read()) == "v1"
    # The record is the one before the failed deploys: the old template changes nothing.
    write(app, {"template.yaml": ROLLBACK_STACK % ("v1", 3, 128)})
    assert "No changes to deploy" in lamina("deploy", "--no-confirm", cwd=app).stdout
    lamina("stack", "delete", "undo", "--no-confirm")


def test_the_change_set_is_asked_about_before_anything_changes(lamina, lam, tmp_path):
    app = write(tmp_path / "asked", {"template.yaml": """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              InlineCode: "def handler(e, c):\\n    return 1\\n"
              Handler: index.handler
              Runtime: python3.11
    """})
    declined = lamina("deploy", cwd=app, stdin="n\n")
    assert "+ Add" in declined.stdout and "Deploy this changeset?" in declined.stdout
    assert "Nothing deployed" in declined.stdout
    assert "asked-Fn" not in function_names(lam)
    lamina("deploy", cwd=app, stdin="y\n")
    assert lam.get_function_configuration(FunctionName="asked-Fn")["Runtime"] == "python3.11"
    kept = lamina("stack", "delete", "asked", stdin="n\n")
    assert "Nothing deleted" in kept.stdout
    lamina("stack", "delete", "asked", stdin="y\n")
    assert "asked-Fn" not in function_names(lam)


# -- builds, without a server ------------------------------------------------------------


def test_the_build_cache_key_follows_sources_and_lock_files_not_node_modules(tmp_path):
    from lamina.stacks.build import BuildTarget, build, cache_key

    source = write(tmp_path / "fn", {"index.js": "exports.handler = async () => 1;\n",
                                     "package.json": '{"name": "fn", "version": "1.0.0"}\n',
                                     "package-lock.json": '{"lockfileVersion": 3}\n'})
    target = BuildTarget("Fn", source, "nodejs20.x")
    first = cache_key(target)
    (source / "node_modules" / "x").mkdir(parents=True)
    (source / "node_modules" / "x" / "index.js").write_text("// installed, not a source\n")
    assert cache_key(target) == first
    (source / "package-lock.json").write_text('{"lockfileVersion": 3, "packages": {}}\n')
    assert cache_key(target) != first
    assert cache_key(BuildTarget("Fn", source, "nodejs20.x", architecture="arm64")) != cache_key(target)

    plain = write(tmp_path / "plain", {"app.py": "def handler(e, c):\n    return 1\n"})
    lines: list[str] = []
    one = build(BuildTarget("Plain", plain, "python3.11"), lines.append, tmp_path / "cache-a")
    two = build(BuildTarget("Plain", plain, "python3.11"), lines.append, tmp_path / "cache-b")
    assert not one.cached and not two.cached
    assert one.code_sha256 == two.code_sha256          # the same bytes, built twice
    assert build(BuildTarget("Plain", plain, "python3.11"), lines.append, tmp_path / "cache-a").cached


TWO_FUNCTIONS = """
Resources:
  Kept:
    Type: AWS::Lambda::Function
    Properties:
      FunctionName: %s
      Runtime: python3.11
      Handler: index.handler
      Role: arn:aws:iam::000000000000:role/any
      Code: {ZipFile: "def handler(e, c):\\n    return 'kept'\\n"}
%s
"""
DROPPED = """
  Dropped:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.11
      Handler: index.handler
      Code: {ZipFile: "def handler(e, c):\\n    return 'dropped'\\n"}
"""


def test_a_resource_left_out_is_removed_and_a_new_name_replaces(lamina, lam, tmp_path):
    app = tmp_path / "shrink"
    write(app, {"template.yaml": TWO_FUNCTIONS % ("shrink-one", DROPPED)})
    lamina("deploy", "--no-confirm", cwd=app)
    assert {"shrink-one", "shrink-Dropped"} <= function_names(lam)
    write(app, {"template.yaml": TWO_FUNCTIONS % ("shrink-two", "")})
    out = lamina("deploy", "--no-confirm", cwd=app).stdout
    assert "- Remove" in out and "* Replace" in out
    names = function_names(lam)
    assert "shrink-two" in names and not {"shrink-one", "shrink-Dropped"} & names
    lamina("stack", "delete", "shrink", "--no-confirm")
    assert "shrink-two" not in function_names(lam)
