"""The web demo in a real headless browser: Debian's chromium driven by selenium through Debian's
chromedriver (nothing is downloaded). The page is served by `musilingo serve` in a subprocess;
the test uploads a WAV it wrote, asks, sees the answer stream in, and asks a follow-up."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from audio_helpers import HAVE_FFMPEG, write_music
from serve_helpers import start_server, tiny_checkpoint

from musilingo_cli.pipelines.ask import AskConfig
from musilingo_cli.pipelines.ask import run as ask_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver); CI runs it",
)

QUESTION, FOLLOW_UP = "What genre is this?", "What instruments are playing?"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",  # the microphone: chromium's own fake device (a beep)
        "--use-fake-device-for-media-stream",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must not look for a driver online
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    ckpt = tiny_checkpoint(root)
    server = start_server(ckpt, log=root / "server.log")
    yield root, ckpt, server
    server.stop()


def test_upload_ask_and_follow_up_in_the_browser(browser, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, ckpt, server = served
    song = tmp_path / "song.wav"
    write_music(song, 4, 24000, seed=7)
    records = []
    ask_run(
        AskConfig(
            inputs=[str(song)],
            questions=[QUESTION],
            model=str(ckpt),
            preset="greedy",
            max_new_tokens=16,
            device="cpu",
            on_record=records.append,
        )
    )

    browser.get(server.url + "/")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=audio]").text == "Audio file"
    browser.find_element(By.ID, "audio").send_keys(str(song))
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: "song.wav" in d.find_element(By.ID, "audio-status").text)
    browser.find_element(By.ID, "question").send_keys(QUESTION)
    browser.find_element(By.ID, "ask").click()

    def answers(d):
        done = d.find_elements(By.CSS_SELECTOR, "#log li[data-done]")
        return [li.get_attribute("class") + ":" + li.text for li in done]

    wait.until(lambda d: len(answers(d)) == 1)
    # the server's default preset here is greedy: the page shows ask's answer
    assert answers(browser) == ["assistant:" + records[0]["answer"]]
    assert browser.find_elements(By.CSS_SELECTOR, "#log li.user")[0].text == f"[song.wav] {QUESTION}"

    browser.find_element(By.ID, "question").send_keys(FOLLOW_UP)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda d: len(answers(d)) == 2)
    second = answers(browser)[1]
    assert second.startswith("assistant:") and len(second) > len("assistant:")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#log li.user")) == 2

    # a new conversation about the same song: choosing the same file again must be seen by the page
    browser.find_element(By.ID, "new").click()
    browser.find_element(By.ID, "audio").send_keys(str(song))
    wait.until(lambda d: "song.wav" in d.find_element(By.ID, "audio-status").text)
    browser.find_element(By.ID, "question").send_keys(QUESTION)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda d: len(answers(d)) == 1)
    assert answers(browser) == ["assistant:" + records[0]["answer"]]


@pytest.mark.skipif(not HAVE_FFMPEG, reason="a recording is webm/opus, which needs ffmpeg to decode")
def test_record_with_the_microphone_then_ask(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, _, server = served
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 120)
    record = browser.find_element(By.ID, "record")
    record.click()
    wait.until(lambda d: record.get_attribute("aria-pressed") == "true")
    time.sleep(1.5)  # record a second and a half of the fake microphone's beeps
    record.click()
    wait.until(lambda d: "recording goes with your next question" in d.find_element(By.ID, "audio-status").text)
    browser.find_element(By.ID, "question").send_keys(QUESTION)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log li[data-done]"))
    answer = browser.find_element(By.CSS_SELECTOR, "#log li[data-done]")
    assert answer.get_attribute("class") == "assistant" and answer.text, answer.text


def test_a_server_with_an_api_key_asks_for_it_on_the_page(browser, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, ckpt, _ = served
    server = start_server(ckpt, env={"MUSILINGO_API_KEY": "sesame"}, log=root / "keyed.log")
    try:
        song = tmp_path / "song.wav"
        write_music(song, 2, 24000, seed=3)
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 120)
        browser.find_element(By.ID, "audio").send_keys(str(song))
        wait.until(lambda d: "song.wav" in d.find_element(By.ID, "audio-status").text)
        browser.find_element(By.ID, "question").send_keys(QUESTION)

        def ask_and_read(key: str | None) -> tuple[str, str]:
            if key is not None:
                field = browser.find_element(By.ID, "key")
                field.clear()
                field.send_keys(key)
            count = len(browser.find_elements(By.CSS_SELECTOR, "#log li[data-done]"))
            browser.find_element(By.ID, "ask").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li[data-done]")) > count)
            last = browser.find_elements(By.CSS_SELECTOR, "#log li[data-done]")[-1]
            return last.get_attribute("class"), last.text

        assert ask_and_read(None) == (
            "error",
            "Error: this server needs an API key: enter it under “API key” and ask again",
        )
        assert browser.find_element(By.CSS_SELECTOR, "details").get_attribute("open") is not None
        kind, text = ask_and_read("wrong")
        assert kind == "error" and "did not accept this API key" in text
        kind, text = ask_and_read("sesame")
        assert kind == "assistant" and text, text
    finally:
        server.stop()
