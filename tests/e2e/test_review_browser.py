"""The review page in headless Chromium against the real app and PostgreSQL.

Signs in, claims from the queues, checks the evidence is on the page (avatar with its face box,
matched photo side by side, the cluster picture), decides with the keyboard shortcuts and sees
the queues shrink to the empty state. Screenshots go to ``$UNMASK_REVIEW_SCREENSHOTS`` when set
(``docs/screenshots`` holds the committed ones), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn

from pipeline.review.app import create_app
from pipeline.review.auth import create_reviewer
from pipeline.review.sample import Showcase, seed_showcase
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.images import ImageStore
from pipeline.store.migrate import upgrade
from pipeline.store.tables import decisions

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1900")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(fresh_database_url: str, shared_dir: Path, tmp_path: Path
           ) -> Iterator[tuple[str, sa.engine.Engine, Showcase]]:
    upgrade(fresh_database_url)
    settings = Settings(database={"url": fresh_database_url}, environment="test",
                        review={"image_dir": tmp_path / "images", "publish_decisions": False})
    engine = make_engine(fresh_database_url)
    fake = sorted((shared_dir / "data" / "faces" / "fake").glob("*.jpg"))[:8]
    real = sorted((shared_dir / "data" / "faces" / "real").glob("*.jpg"))[:1]
    show = seed_showcase(engine, ImageStore(tmp_path / "images"),
                         [p.read_bytes() for p in fake], [p.read_bytes() for p in real])
    create_reviewer(engine, "alice", PASSWORD, "reviewer", "Europe/Oslo")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "review app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", engine, show
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()


@pytest.fixture
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are needed (ops/install.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="unmask-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_reviewer_signs_in_claims_sees_evidence_and_decides(served, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, engine, show = served
    d = browser
    shots = Path(os.environ.get("UNMASK_REVIEW_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(d, 15)

    def shot(name: str) -> None:
        d.set_window_size(1280, 700)
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1280, max(700, min(int(height) + 90, 3000)))
        assert d.save_screenshot(str(shots / f"{name}.png"))

    def depths() -> dict[str, int]:
        rows = d.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
        return {r.get_attribute("data-queue"): int(r.get_attribute("data-depth")) for r in rows}

    def press(key: str) -> None:
        d.find_element(By.TAG_NAME, "body").send_keys(key)

    def claim(queue: str) -> None:
        d.find_element(By.CSS_SELECTOR, f'tr[data-queue="{queue}"] form.claim button').click()
        wait.until(ec.presence_of_element_located((By.ID, "item-title")))

    def image_loaded(selector: str) -> bool:
        return bool(d.execute_script(
            "var i = document.querySelector(arguments[0]);"
            "return i && i.complete && i.naturalWidth > 0;", selector))

    d.get(base + "/")
    wait.until(ec.presence_of_element_located((By.ID, "login-submit")))
    assert "/login" in d.current_url
    shot("login")
    d.find_element(By.ID, "username").send_keys("alice")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.ID, "login-submit").click()
    wait.until(ec.presence_of_element_located((By.ID, "queues")))
    before = depths()
    assert before == {"accounts": 0, "ai-avatars": 2, "clusters": 1, "stolen-photos": 1}
    assert "escalated" not in before
    shot("queues")

    claim("clusters")
    assert d.find_element(By.ID, "cluster-graph").is_displayed()
    assert len(d.find_elements(By.CSS_SELECTOR, "#cluster-graph line")) == 18
    assert len(d.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == 6
    assert "daily-outlet.example" in d.find_element(By.ID, "binding").text
    assert d.find_element(By.ID, "face-box") is not None
    assert "sample-1" in d.find_element(By.ID, "policy-version").text
    assert "cluster: score 0.91" in d.find_element(By.ID, "reasons").text
    assert "CET" in d.page_source or "CEST" in d.page_source
    assert image_loaded("#members img")
    shot("item-cluster")
    press("d")
    wait.until(ec.presence_of_element_located((By.ID, "queues")))
    assert "Disabled item" in d.find_element(By.CSS_SELECTOR, ".flash.ok").text
    assert depths()["clusters"] == 0

    claim("stolen-photos")
    pair = d.find_element(By.CSS_SELECTOR, "#matches .match")
    assert len(pair.find_elements(By.TAG_NAME, "img")) == 2
    assert "2" in pair.find_element(By.CSS_SELECTOR, ".distance").text
    assert image_loaded("#matches .match img")
    assert "0.120" in d.find_element(By.ID, "avatar-score").text
    shot("item-stolen-photo")
    d.find_element(By.ID, "note").send_keys("photographer's portfolio")
    d.find_element(By.ID, "btn-disable").click()
    wait.until(ec.presence_of_element_located((By.ID, "queues")))
    assert depths()["stolen-photos"] == 0

    claim("ai-avatars")
    assert float(d.find_element(By.ID, "avatar-score").text) >= 0.83
    shot("item-ai-avatar")
    press("e")
    wait.until(ec.presence_of_element_located((By.ID, "queues")))
    assert depths()["ai-avatars"] == 1
    press("n")
    wait.until(ec.presence_of_element_located((By.ID, "item-title")))
    press("c")
    wait.until(ec.presence_of_element_located((By.ID, "queues")))
    assert sum(depths().values()) == 0
    assert d.find_element(By.ID, "queues-empty").is_displayed()
    shot("queues-empty")

    d.get(base + "/history")
    rows = d.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(rows) >= 9
    shot("history")

    with engine.connect() as conn:
        got = conn.execute(sa.select(decisions.c.action, sa.func.count())
                           .where(decisions.c.source == "reviewer")
                           .group_by(decisions.c.action)).all()
    assert dict((a, n) for a, n in got) == {"disable": len(show.cluster_accounts) + 1,
                                            "allow": 1}
