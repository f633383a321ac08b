"""Browser review in a real headless Chromium (Selenium): rate 5 items with the keyboard, restart the
server mid-way, double-submit, import: metrics/review.json counts exactly 5 verdicts."""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian chromium and chromium-driver are not "
                                "installed (apt-get install -y chromium chromium-driver)")


def _predictions(path, n=8):
    rows = [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"What is the fee for plan {i}?"}],
             "reference": f"${3 * i}", "base_answer": f"base answer {i}", "tuned_answer": f"tuned answer {i}"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _start(tmp_path, port):
    proc = subprocess.Popen([sys.executable, "-c", "from domainft.cli import cli; cli()", "review", "serve",
                             "--port", str(port), "--seed", "3"], cwd=tmp_path)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/items", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("review server did not start")


def _stop(proc):
    proc.terminate()
    proc.wait(timeout=20)


def test_rate_five_in_the_browser_across_a_restart(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements.txt)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "metrics").mkdir()
    _predictions(tmp_path / "metrics/predictions.jsonl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    server = _start(tmp_path, port)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    wait = WebDriverWait(driver, 20)

    def progress(text):
        wait.until(lambda d: d.find_element(By.ID, "progress").text == text)

    def key(k):
        driver.find_element(By.TAG_NAME, "body").send_keys(k)

    try:
        driver.get(f"http://127.0.0.1:{port}/?rater=alice")
        progress("0 / 8 rated")
        items = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/items").read())
        assert set(items[0]) == {"item", "question", "reference", "answer_a", "answer_b"}  # blind: no key
        key("a"); progress("1 / 8 rated")
        key("b"); progress("2 / 8 rated")
        driver.find_element(By.ID, "comment").send_keys("both wrong at")  # a, t typed in the comment: no shortcut
        time.sleep(0.5)
        assert driver.find_element(By.ID, "progress").text == "2 / 8 rated"
        driver.find_element(By.ID, "btn-tie").click(); progress("3 / 8 rated")
        _stop(server)  # restart mid-way
        server = _start(tmp_path, port)
        driver.get(f"http://127.0.0.1:{port}/?rater=alice")  # resumes at the first unrated item
        progress("3 / 8 rated")
        assert driver.find_element(By.ID, "title").text.startswith("item-0004")
        key("a"); progress("4 / 8 rated")
        driver.find_element(By.ID, "btn-b").click(); progress("5 / 8 rated")
        # re-rating item 5 (back, then A) replaces its verdict: still 5
        key("\ue012")  # ArrowLeft
        wait.until(lambda d: d.find_element(By.ID, "title").text.startswith("item-0005"))
        key("a")
        wait.until(lambda d: d.find_element(By.ID, "title").text.startswith("item-0006"))
        progress("5 / 8 rated")
        # a double submit (the same request sent twice, as a retry would) stores one verdict
        req = json.dumps({"rater": "alice", "item": "item-0005", "preference": "A", "comment": ""}).encode()
        for _ in range(2):
            r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/verdicts", data=req,
                                                              headers={"Content-Type": "application/json"}))
            assert json.loads(r.read())["rated"] == 5
        driver.refresh()
        progress("5 / 8 rated")
        # another rater's verdicts are kept apart
        driver.get(f"http://127.0.0.1:{port}/?rater=bob")
        progress("0 / 8 rated")
    finally:
        driver.quit()
        _stop(server)
    out = subprocess.run([sys.executable, "-c", "from domainft.cli import cli; cli()", "review", "import",
                          "--db", "review/verdicts.db"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    m = json.loads((tmp_path / "metrics/review.json").read_text())
    assert m["human.ratings"] == 5 and m["human.items"] == 5 and m["human.unrated"] == 0
    assert m["human.wins"] + m["human.ties"] + m["human.losses"] == 5 and m["human.ties"] == 1
    assert len(m["human.verdicts"]) == 5 and set(m["human.verdicts"].values()) <= {"base", "tuned", "tie"}
    import sqlite3

    rows = sqlite3.connect(tmp_path / "review/verdicts.db").execute(
        "SELECT item, preference, comment FROM verdicts WHERE rater = 'alice' ORDER BY item").fetchall()
    assert [r[0] for r in rows] == [f"item-000{i}" for i in range(1, 6)]
    assert rows[2] == ("item-0003", "tie", "both wrong at")  # "t" typed in the comment is text, not a shortcut
    assert rows[4][1] == "A"  # the re-rating replaced the earlier B
