"""Lamina on PostgreSQL: the same tables and migrations as on SQLite, a whole server
on it, and two front ends sharing one database and keeping their caches in step."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Iterator

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, select, text

from lamina.store.database import open_database
from lamina.store.functions import FunctionStore
from lamina.store.migrations import MIGRATIONS, migrate
from lamina.store.schema import schema_migrations
from tests.conftest import Server
from tests.helpers import function_args, make_zip, wait_active, wait_for, wait_updated
from tests.postgres import Postgres, postgres_server  # noqa: F401  (the session's PostgreSQL)
from tests.test_store_migrations import FIRST_RELEASE

pytestmark = pytest.mark.slow

ENV_ECHO = make_zip({"app.py": (
    "import os\n"
    "def handler(event, context):\n"
    "    return {'color': os.environ.get('COLOR'), 'event': event}\n"
)})


# -- the store ---------------------------------------------------------------------------


def test_new_postgres_database_applies_every_migration_once(postgres: Postgres) -> None:
    engine = open_database(postgres.new_database())
    try:
        with engine.begin() as conn:
            applied = set(conn.execute(select(schema_migrations.c.id)).scalars())
            assert applied == {migration_id for migration_id, _ in MIGRATIONS}
            assert migrate(conn) == []
        assert FunctionStore(engine).count_and_code_size() == (0, 0)
    finally:
        engine.dispose()


def test_first_release_postgres_database_is_migrated_keeping_its_data(postgres: Postgres) -> None:
    url = postgres.new_database()
    raw = create_engine(url)
    with raw.begin() as conn:
        for statement in filter(str.strip, FIRST_RELEASE.split(";")):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO functions VALUES ('old', '2026-01-01')"))
        conn.execute(text("INSERT INTO function_versions VALUES ('old', '$LATEST', 'r1', :c)"),
                     {"c": json.dumps({"function_name": "old", "code_size": 4321})})
    raw.dispose()
    engine = open_database(url)
    try:
        store = FunctionStore(engine)
        assert store.count_and_code_size() == (1, 4321)
        assert store.get_version("old", "$LATEST")["code_size"] == 4321
    finally:
        engine.dispose()


# -- one server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("lamina-pg") / "data",
                    {"LAMINA_DATABASE_URL": postgres.new_database()})
    server.start()
    yield server
    server.stop()


def test_a_server_on_postgres_serves_functions_versions_aliases_queues_and_events(
        pg_server: Server) -> None:
    lam, sqs = pg_server.client(), pg_server.client("sqs")
    name = f"pg-{uuid.uuid4().hex[:8]}"
    lam.create_function(**function_args(name, ENV_ECHO, Environment={"Variables": {"COLOR": "red"}}))
    wait_active(lam, name)
    assert json.loads(lam.invoke(FunctionName=name, Payload=b'{"n":1}')["Payload"].read()) == {
        "color": "red", "event": {"n": 1}}
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"COLOR": "blue"}})
    wait_updated(lam, name)
    assert json.loads(lam.invoke(FunctionName=name, Qualifier="live")["Payload"].read())["color"] == "red"
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read())["color"] == "blue"

    # An asynchronous event goes through the durable queue to an on-success destination.
    queue_url = sqs.create_queue(QueueName=f"{name}-done")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": queue_arn}})
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n":2}')["StatusCode"] == 202
    message = wait_for(lambda: sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages"))
    record = json.loads(message[0]["Body"])
    assert record["requestPayload"] == {"n": 2}
    assert record["responsePayload"] == {"color": "blue", "event": {"n": 2}}

    # Everything is in PostgreSQL: a restarted server has it all.
    pg_server.stop()
    pg_server.start()
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == version
    assert json.loads(lam.invoke(FunctionName=name, Qualifier="live")["Payload"].read())["color"] == "red"


# -- two front ends ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def front_ends(postgres: Postgres,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two servers on one PostgreSQL. They share the data dir too (code blobs are
    files there, content-addressed), as front ends on one machine would."""
    data_dir = tmp_path_factory.mktemp("lamina-two") / "data"
    # Schedule time runs 50 times faster: rate(1 minute) fires every 1.2 s.
    env = {"LAMINA_DATABASE_URL": postgres.new_database(), "LAMINA_SCHEDULE_TIME_SCALE": "0.02"}
    a, b = Server(data_dir, env), Server(data_dir, env)
    b.log_path = data_dir.parent / "b-server.log"
    a.start()
    b.start()
    yield a, b
    b.stop()
    a.stop()


def color_of(server: Server, name: str) -> str:
    return json.loads(server.client().invoke(FunctionName=name)["Payload"].read())["color"]


def test_created_on_one_front_end_invoked_on_the_other(front_ends: tuple[Server, Server]) -> None:
    a, b = front_ends
    name = f"two-{uuid.uuid4().hex[:8]}"
    a.client().create_function(**function_args(name, ENV_ECHO,
                                               Environment={"Variables": {"COLOR": "red"}}))
    wait_active(b.client(), name)
    assert color_of(b, name) == "red"


def test_a_change_on_one_front_end_is_seen_by_the_other_at_its_next_invocation(
        front_ends: tuple[Server, Server]) -> None:
    a, b = front_ends
    name = f"two-{uuid.uuid4().hex[:8]}"
    a.client().create_function(**function_args(name, ENV_ECHO,
                                               Environment={"Variables": {"COLOR": "red"}}))
    wait_active(a.client(), name)
    # B caches the version and keeps a warm environment of it.
    assert color_of(b, name) == "red"
    for color in ("blue", "green"):
        a.client().update_function_configuration(
            FunctionName=name, Environment={"Variables": {"COLOR": color}})
        wait_updated(a.client(), name)
        assert color_of(b, name) == color

    # Reserved concurrency 0 set on A throttles on B; deleting it on A lets B invoke.
    a.client().put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as raised:
        b.client().invoke(FunctionName=name)
    assert raised.value.response["Error"]["Code"] == "TooManyRequestsException"
    a.client().delete_function_concurrency(FunctionName=name)
    assert color_of(b, name) == "green"

    # Deleted on A: B answers as AWS does for a missing function.
    a.client().delete_function(FunctionName=name)
    with pytest.raises(ClientError) as raised:
        b.client().invoke(FunctionName=name)
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_two_front_ends_receiving_from_one_queue_never_get_the_same_message(
        front_ends: tuple[Server, Server]) -> None:
    a, b = front_ends
    queue = f"two-{uuid.uuid4().hex[:8]}"
    url = a.client("sqs").create_queue(QueueName=queue)["QueueUrl"]
    sent = [f"m{i}" for i in range(200)]
    for start in range(0, len(sent), 10):
        a.client("sqs").send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(sent[start:start + 10])])
    received: dict[str, list[str]] = {"a": [], "b": []}

    def drain(label: str, server: Server) -> None:
        sqs = server.client("sqs")
        empty = 0
        while empty < 2:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                           VisibilityTimeout=300).get("Messages", [])
            empty = 0 if messages else empty + 1
            received[label] += [m["Body"] for m in messages]

    threads = [threading.Thread(target=drain, args=(label, server))
               for label, server in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    together = received["a"] + received["b"]
    assert sorted(together) == sorted(sent)  # each exactly once, though hidden for 300 s
    assert received["a"] and received["b"]


def test_schedules_fire_from_one_front_end_only(front_ends: tuple[Server, Server]) -> None:
    a, b = front_ends
    name = f"two-{uuid.uuid4().hex[:8]}"
    lam = a.client()
    arn = lam.create_function(**function_args(name))["FunctionArn"]
    wait_active(lam, name)
    events = a.client("events")
    rule_arn = events.put_rule(Name=name, ScheduleExpression="rate(1 minute)")["RuleArn"]
    lam.add_permission(FunctionName=name, StatementId="events", Action="lambda:InvokeFunction",
                       Principal="events.amazonaws.com", SourceArn=rule_arn)
    queue_url = a.client("sqs").create_queue(QueueName=f"{name}-done")["QueueUrl"]
    queue_arn = a.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": queue_arn}})
    events.put_targets(Rule=name, Targets=[{"Id": "f", "Arn": arn}])
    deadline = time.monotonic() + 60
    seen: list[str] = []
    while time.monotonic() < deadline and len(seen) < 5:
        for message in a.client("sqs").receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", []):
            seen.append(json.loads(message["Body"])["requestPayload"]["time"])
    assert len(seen) >= 5
    # One invocation per firing, whichever front end fired it.
    assert len(seen) == len(set(seen))
