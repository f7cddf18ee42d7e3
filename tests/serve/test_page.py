"""The student's page in a real headless Chromium (Debian's chromium and chromium-driver): a file
picked and sent, and a recording from a fake microphone fed by a wav file; both answers stream in."""

from __future__ import annotations

import shutil
import time

import openai
import pytest

from salad_ray.testing.openai_audio import audio_part

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PROMPT = "What did you hear?"


def browser(*flags: str):
    """Headless Chromium through its WebDriver; Selenium finds both from the paths given (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "chromium and chromium-driver are Debian packages: run `make setup`"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *flags):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def answer_on_page(driver, timeout: float = 120) -> tuple[str, str]:
    """Send, wait until the stream is over; (answer, status line)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "send").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda _: status.text.startswith(("done", "error")))
    return driver.execute_script("return document.getElementById('answer').textContent"), status.text


def fill_in(driver, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    model = driver.find_element(By.ID, "model")
    WebDriverWait(driver, 30).until(lambda _: model.text not in ("", "…"))
    driver.find_element(By.ID, "prompt").send_keys(PROMPT)
    for field, value in (("max-tokens", "16"), ("temperature", "0")):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)


def test_a_picked_file_is_sent_and_the_answer_streams_in(served, wav_files):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    with open(wav_files["weather"], "rb") as f:
        content = [audio_part(f.read()), {"type": "text", "text": PROMPT}]
    direct = client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=[{"role": "user", "content": content}],
        max_tokens=16,
        temperature=0,
    )
    driver = browser()
    try:
        fill_in(driver, url)
        driver.find_element(By.ID, "file").send_keys(wav_files["weather"])
        info = driver.find_element(By.ID, "audio-info")
        WebDriverWait(driver, 30).until(lambda _: "weather.wav" in info.text)
        text, status = answer_on_page(driver)
        # the page sent the file itself: the answer is the API's answer to the same request
        assert status.startswith("done: "), status
        assert text == direct.choices[0].message.content
        assert f"{direct.usage.prompt_tokens} prompt" in status
        assert driver.find_elements(By.CSS_SELECTOR, "#history .turn")  # the conversation goes on
    finally:
        driver.quit()


def test_a_recording_from_the_microphone_is_sent(served, wav_files):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    unheard = client.chat.completions.create(
        model=client.models.list().data[0].id, messages=[{"role": "user", "content": PROMPT}], max_tokens=1
    )
    driver = browser(
        "--use-fake-ui-for-media-stream",  # grant the microphone without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav_files['numbers']}",
        "--autoplay-policy=no-user-gesture-required",
    )
    try:
        fill_in(driver, url)
        driver.find_element(By.ID, "record").click()
        info = driver.find_element(By.ID, "audio-info")
        WebDriverWait(driver, 10).until(lambda _: info.text == "recording…")
        time.sleep(2.5)
        driver.find_element(By.ID, "stop").click()
        WebDriverWait(driver, 30).until(lambda _: info.text.startswith("recording:"))
        seconds = float(info.text.split(":")[1].split("s")[0])
        assert 1.5 < seconds < 5, info.text
        text, status = answer_on_page(driver)
        assert status.startswith("done: "), status
        counts = status.split(", ")[1].split()  # "<prompt> prompt + <answer> answer tokens"
        assert int(counts[0]) > unheard.usage.prompt_tokens  # the recording's speech positions are in it
        assert int(counts[3]) >= 1 and (text or int(counts[3]) == 1)  # an answer came back and is shown
    finally:
        driver.quit()
