"""The web console in a real browser (headless Chromium through chromedriver) against
a real server: what a user sees and what the API says afterwards.

Each test saves a screenshot of the page it ends on under $LAMINA_CONSOLE_SCREENSHOTS
(default .pytest-tmp/console-screenshots), the artefacts a reviewer looks at.
"""

from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import function_args, make_zip, wait_active, wait_for

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (make installs them as root)",
)
# Inside pytest's base temp dir (emptied when the next session starts) unless set.
SHOTS = Path(os.environ.get("LAMINA_CONSOLE_SCREENSHOTS")
             or Path(__file__).resolve().parents[1] / ".pytest-tmp" / "console-screenshots")
AWS_MEMORY_MESSAGE = ("1 validation error detected: Value '100' at 'memorySize' failed to satisfy "
                      "constraint: Member must have value greater than or equal to 128")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                                  options=options)
    except WebDriverException as error:
        pytest.skip(f"chromium does not start here: {error.msg}")
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def shot(browser: webdriver.Chrome, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    # The whole page, not just the window: set the window to the document's height.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(900, min(int(height), 4000)))
    browser.save_screenshot(str(SHOTS / f"{name}.png"))
    browser.set_window_size(1280, 900)


def wait(browser: webdriver.Chrome, timeout: float = 30):
    # htmx swaps parts of the page while a condition looks at them.
    return WebDriverWait(browser, timeout, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException, NoSuchElementException])


def text_of(browser: webdriver.Chrome, css: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, css).text


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def function(lam) -> str:
    name = unique("console")
    lam.create_function(**function_args(name, Environment={"Variables": {"GREETING": "hi"}}))
    wait_active(lam, name)
    return name


def test_root_redirects_to_the_console_and_the_list_shows_created_functions(server, lam, browser) -> None:
    prefix = unique("listed")
    names = [f"{prefix}-{i}" for i in range(3)]
    failing = make_zip({"app.py": "def handler(event, context):\n"
                                  "    if event.get('fail'):\n        raise ValueError('asked to')\n"
                                  "    return event\n"})
    for name in names:
        lam.create_function(**function_args(name, code=failing))
    wait_active(lam, names[0])
    lam.invoke(FunctionName=names[0], Payload=b"{}")
    assert lam.invoke(FunctionName=names[0], Payload=b'{"fail": true}')["FunctionError"] == "Unhandled"
    browser.get(server.endpoint + "/")
    assert browser.current_url == server.endpoint + "/console/"
    search = browser.find_element(By.ID, "q")
    search.send_keys(prefix)
    search.submit()
    wait(browser).until(lambda b: prefix in b.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#functions tbody tr")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == names
    assert all("python3.11" in row.text for row in rows)
    # Invocations and errors in the last hour.
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [c[5:7] for c in cells] == [["2", "1"], ["0", "0"], ["0", "0"]]
    shot(browser, "functions")


def test_the_list_pages_50_functions_at_a_time(server, lam, browser) -> None:
    prefix = unique("paged")
    names = [f"{prefix}-{i:02d}" for i in range(55)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: lam.create_function(**function_args(name)), names))
    browser.get(f"{server.endpoint}/console/?q={prefix}")
    assert text_of(browser, "h1") == "Functions (55)"
    first = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#functions tbody td:first-child a")]
    assert first == names[:50]
    browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    wait(browser).until(lambda b: "page=2" in b.current_url)
    second = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#functions tbody td:first-child a")]
    assert second == names[50:]
    assert "Page 2 of 2" in text_of(browser, "nav.pager")


def test_test_with_a_saved_event_shows_the_result_and_the_log(server, lam, browser, function) -> None:
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=test")
    browser.find_element(By.ID, "event_name").send_keys("order")
    editor = browser.find_element(By.ID, "event")
    editor.clear()
    editor.send_keys('{"order": 42}')
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(lambda b: "Saved test event order" in text_of(b, "#test-result"))

    # A fresh page: the event is stored in Lamina, not in the browser.
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=test")
    Select(browser.find_element(By.ID, "saved")).select_by_visible_text("order")
    browser.find_element(By.ID, "load-event").click()
    wait(browser).until(lambda b: '"order": 42' in b.find_element(By.ID, "event").get_attribute("value"))
    browser.find_element(By.ID, "test-button").click()
    wait(browser).until(lambda b: b.find_elements(By.ID, "test-payload"))
    assert '"order": 42' in text_of(browser, "#test-payload")
    assert "succeeded" in text_of(browser, "#test-status")
    log = text_of(browser, "#test-log")
    assert "START RequestId:" in log and "REPORT RequestId:" in log
    assert "Billed Duration" in text_of(browser, "#test-report")
    # The live tail shows the same invocation's lines.
    wait(browser).until(lambda b: "REPORT RequestId:" in text_of(b, "#log-tail"))
    shot(browser, "test")

    browser.find_element(By.ID, "delete-event-button").click()
    wait(browser).until(lambda b: "Deleted test event order" in text_of(b, "#test-result"))
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=test")
    options = [o.text for o in Select(browser.find_element(By.ID, "saved")).options]
    assert "order" not in options


def test_a_sample_event_loads_into_the_editor(server, browser, function) -> None:
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=test")
    Select(browser.find_element(By.ID, "template")).select_by_visible_text("sqs-receive-message")
    browser.find_element(By.ID, "load-event").click()
    wait(browser).until(lambda b: '"eventSource": "aws:sqs"' in b.find_element(By.ID, "event").get_attribute("value"))


def test_editing_memory_changes_get_function_configuration(server, lam, browser, function) -> None:
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=configuration")
    memory = browser.find_element(By.ID, "memory")
    memory.clear()
    memory.send_keys("256")
    browser.find_element(By.ID, "save-general").click()
    wait(browser).until(lambda b: "done=saved" in b.current_url)
    assert lam.get_function_configuration(FunctionName=function)["MemorySize"] == 256
    assert browser.find_element(By.ID, "memory").get_attribute("value") == "256"
    # The environment variables survive, as UpdateFunctionConfiguration without
    # Environment leaves them.
    assert lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"] == {"GREETING": "hi"}
    shot(browser, "configuration")


def test_memory_100_shows_aws_validation_message_and_changes_nothing(server, lam, browser, function) -> None:
    before = lam.get_function_configuration(FunctionName=function)["MemorySize"]
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=configuration")
    memory = browser.find_element(By.ID, "memory")
    memory.clear()
    memory.send_keys("100")
    browser.find_element(By.ID, "save-general").click()
    wait(browser).until(lambda b: b.find_elements(By.ID, "error"))
    assert text_of(browser, "#error .error-message") == AWS_MEMORY_MESSAGE
    assert "ValidationException" in text_of(browser, "#error")
    # The form keeps what was typed, beside the message.
    assert browser.find_element(By.ID, "memory").get_attribute("value") == "100"
    assert lam.get_function_configuration(FunctionName=function)["MemorySize"] == before
    shot(browser, "configuration-error")


def test_environment_variables_edited_in_the_console_reach_the_api(server, lam, browser, function) -> None:
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=configuration")
    editor = browser.find_element(By.ID, "environment")
    editor.clear()
    editor.send_keys("GREETING=hello\nSTAGE=test")
    browser.find_element(By.ID, "save-environment").click()
    wait(browser).until(lambda b: "done=saved" in b.current_url)
    variables = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    assert variables == {"GREETING": "hello", "STAGE": "test"}


def test_a_chart_renders_with_points_after_invocations(server, lam, browser) -> None:
    name = unique("charted")
    lam.create_function(**function_args(name))
    wait_active(lam, name)
    for _ in range(3):
        lam.invoke(FunctionName=name, Payload=b"{}")
    browser.get(f"{server.endpoint}/console/functions/{name}?tab=monitor")
    invocations = browser.find_element(By.ID, "chart-0")
    assert "Invocations" in invocations.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    points = invocations.find_elements(By.CSS_SELECTOR, "circle.point")
    assert points, "the Invocations chart has no points"
    assert sum(int(p.find_element(By.TAG_NAME, "title").get_attribute("textContent").rsplit(": ", 1)[1])
               for p in points) == 3
    durations = browser.find_element(By.ID, "chart-1")
    assert durations.find_elements(By.CSS_SELECTOR, "circle.point")
    # Another range reads the same data.
    browser.get(f"{server.endpoint}/console/functions/{name}?tab=monitor&range=1d")
    assert browser.find_element(By.ID, "chart-0").find_elements(By.CSS_SELECTOR, "circle.point")
    browser.get(f"{server.endpoint}/console/functions/{name}?tab=monitor")
    shot(browser, "monitor")


def test_create_from_the_blank_template_publish_point_an_alias_and_delete(server, lam, browser) -> None:
    name = unique("created")
    browser.get(f"{server.endpoint}/console/create")
    shot(browser, "create")
    browser.find_element(By.ID, "name").send_keys(name)
    Select(browser.find_element(By.ID, "runtime")).select_by_visible_text("python3.11")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    wait(browser).until(lambda b: f"/functions/{name}" in b.current_url)
    config = wait_active(lam, name)
    assert config["Handler"] == "lambda_function.lambda_handler"

    browser.get(f"{server.endpoint}/console/functions/{name}?tab=code&file=lambda_function.py")
    assert "def lambda_handler(event, context):" in text_of(browser, "#source")
    shot(browser, "code")

    browser.get(f"{server.endpoint}/console/functions/{name}?tab=versions")
    browser.find_element(By.ID, "publish").click()
    wait(browser).until(lambda b: "published" in b.current_url)
    # Publishing again without a change answers the same version, as on AWS.
    lam.update_function_configuration(FunctionName=name, Description="second")
    wait_active(lam, name)
    browser.find_element(By.ID, "publish").click()
    wait(browser).until(lambda b: "version%202" in b.current_url)
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == \
        ["$LATEST", "1", "2"]
    shot(browser, "versions")

    browser.get(f"{server.endpoint}/console/functions/{name}?tab=aliases")
    browser.find_element(By.ID, "alias").send_keys("live")
    Select(browser.find_element(By.ID, "version")).select_by_visible_text("1")
    Select(browser.find_element(By.ID, "extra_version")).select_by_visible_text("2")
    browser.find_element(By.ID, "weight").send_keys("10")
    browser.find_element(By.ID, "save-alias").click()
    wait(browser).until(lambda b: "alias" in b.current_url and "done" in b.current_url)
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}
    assert "2: 10.0 %" in text_of(browser, "#aliases")
    shot(browser, "aliases")

    # A bad weight: the API's own message, inline.
    browser.find_element(By.ID, "alias").send_keys("canary")
    Select(browser.find_element(By.ID, "version")).select_by_visible_text("1")
    Select(browser.find_element(By.ID, "extra_version")).select_by_visible_text("2")
    browser.find_element(By.ID, "weight").send_keys("150")
    browser.find_element(By.ID, "save-alias").click()
    wait(browser).until(lambda b: b.find_elements(By.ID, "error"))
    assert "additionalVersionWeights" in text_of(browser, "#error") or "weight" in text_of(browser, "#error").lower()

    browser.get(f"{server.endpoint}/console/functions/{name}?tab=configuration")
    browser.execute_script("window.confirm = () => true")
    browser.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait(browser).until(lambda b: "deleted" in b.current_url)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_an_uploaded_zip_becomes_the_function(server, lam, browser, tmp_path) -> None:
    name = unique("uploaded")
    package = tmp_path / "package.zip"
    package.write_bytes(make_zip({"app.py": "def handler(event, context):\n    return 'uploaded'\n",
                                  "lib/util.py": "X = 1\n"}))
    browser.get(f"{server.endpoint}/console/create")
    browser.find_element(By.ID, "name").send_keys(name)
    Select(browser.find_element(By.ID, "runtime")).select_by_visible_text("python3.11")
    browser.find_element(By.ID, "package").send_keys(str(package))
    browser.find_element(By.ID, "handler").send_keys("app.handler")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    wait(browser).until(lambda b: f"/functions/{name}" in b.current_url)
    wait_active(lam, name)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b'"uploaded"'
    tree = text_of(browser, "nav.tree")
    assert "lib/" in tree and "util.py" in tree and "app.py" in tree


def test_the_layers_and_queues_lists(server, lam, browser) -> None:
    layer = unique("console-layer")
    lam.publish_layer_version(LayerName=layer, Content={"ZipFile": make_zip({"python/x.py": "X = 1\n"})},
                              CompatibleRuntimes=["python3.11"])
    sqs = server.client("sqs")
    queue = unique("console-queue")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    browser.get(f"{server.endpoint}/console/layers")
    assert layer in text_of(browser, "#layers")
    shot(browser, "layers")
    browser.get(f"{server.endpoint}/console/queues")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr") if queue in r.text)
    assert row.find_elements(By.TAG_NAME, "td")[2].text == "3"
    shot(browser, "queues")


def test_with_access_keys_the_console_asks_for_a_key(start_server, browser) -> None:
    keyed = start_server({"LAMINA_ACCESS_KEYS": "AKIDCONSOLE:s3cret"}, name="lamina-console-keys")
    browser.get(keyed.endpoint + "/console/")
    wait(browser).until(lambda b: "/console/login" in b.current_url)
    browser.find_element(By.ID, "access_key_id").send_keys("AKIDCONSOLE")
    browser.find_element(By.ID, "secret_access_key").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "[role=alert]"))
    assert "security token included in the request is invalid" in text_of(browser, "[role=alert]")
    shot(browser, "login")
    browser.find_element(By.ID, "access_key_id").send_keys("AKIDCONSOLE")
    browser.find_element(By.ID, "secret_access_key").send_keys("s3cret")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    wait(browser).until(lambda b: b.current_url == keyed.endpoint + "/console/")
    assert text_of(browser, "h1").startswith("Functions")
    lam = keyed.client(key="AKIDCONSOLE", secret="s3cret")
    name = unique("keyed")
    lam.create_function(**function_args(name))
    browser.get(keyed.endpoint + "/console/")
    wait_for(lambda: name in text_of(browser, "#functions"))


def test_an_invoke_error_is_shown_inline(server, browser, function) -> None:
    browser.get(f"{server.endpoint}/console/functions/{function}?tab=test")
    browser.find_element(By.ID, "qualifier").send_keys("nosuchalias")
    browser.find_element(By.ID, "test-button").click()
    wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#test-result #error"))
    assert text_of(browser, "#test-result #error") == (
        f"ResourceNotFoundException: Function not found: "
        f"arn:aws:lambda:us-east-1:000000000000:function:{function}:nosuchalias")


def test_an_event_over_6_mb_gets_the_invoke_413_message(server, function) -> None:
    import httpx

    event = '{"data": "' + "x" * (6 * 1024 * 1024) + '"}'
    response = httpx.post(f"{server.endpoint}/console/functions/{function}/invoke",
                          data={"event": event, "action": "test"}, timeout=60)
    assert response.status_code == 413
    assert "RequestEntityTooLargeException" in response.text
    assert "Request must be smaller than 6291456 bytes for the InvokeFunction operation" in response.text


def test_the_console_refuses_form_posts_from_other_sites(server, lam, function) -> None:
    import httpx

    before = lam.get_function_configuration(FunctionName=function)["MemorySize"]
    response = httpx.post(f"{server.endpoint}/console/functions/{function}/configuration",
                          data={"memory": "512"}, headers={"Origin": "http://elsewhere.example"})
    assert response.status_code == 403
    assert lam.get_function_configuration(FunctionName=function)["MemorySize"] == before


def test_a_name_with_markup_is_shown_as_text(server) -> None:
    import httpx

    for path in ("/console/functions/%3Cb%3Ex", "/console/functions/%3Cb%3Ex/logs"):
        response = httpx.get(server.endpoint + path)
        assert response.status_code == 400
        assert "<b>x" not in response.text and "&lt;b&gt;x" in response.text
