"""`de serve` in a real browser: Debian's Chromium, headless, driven by Playwright.

Screenshots of the grid, a clip page and a run page go to test-output/screenshots/ (or
$DE_TEST_OUTPUT/screenshots)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import helpers

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                 reason="needs Debian's chromium: sudo apt-get install -y chromium (make test installs it when it may)")]
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
OUT = Path(os.environ.get("DE_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output")) / "screenshots"


@pytest.fixture()
def page(live_server):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "the browser tests need Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.goto(live_server["url"] + f"/?token={live_server['token']}")  # the link de serve prints: sets the cookie
        assert "token=" not in pg.url  # ... and the secret leaves the address bar
        pg.dialogs = []
        pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
        LIVE["lock"] = live_server["lock"]
        try:
            yield pg, live_server
        finally:
            browser.close()


def rows(catalog, sql, params=()):
    with LIVE["lock"]:
        return helpers.rows(catalog, sql, params)


LIVE: dict = {}


def shot(pg, name):
    OUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUT / name), full_page=True)


def count_on_page(pg) -> int:
    """The page's clip count, once it is there (a first page may be sent before its filter is
    counted; the page's script then fetches the count)."""
    pg.wait_for_function("() => /^\\d/.test(document.getElementById('count').innerText)", timeout=30000)
    return int(pg.inner_text("#count").split()[0])


def test_grid_thumbnails_filter_and_facet(page):
    pg, srv = page
    pg.goto(srv["url"] + "/")
    pg.wait_for_load_state("networkidle")
    n = rows(srv["catalog"], "SELECT count(*) FROM clips")[0][0]
    assert count_on_page(pg) == n
    pg.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy thumbnails below the fold
    pg.wait_for_function("Array.from(document.querySelectorAll('img.thumb')).every(i => i.complete)")
    widths = pg.evaluate("Array.from(document.querySelectorAll('img.thumb')).map(i => i.naturalWidth)")
    assert len(widths) == n and all(w > 0 for w in widths)
    shot(pg, "grid.png")
    # the filter box
    pg.fill("#q", "duration_s > 2")
    pg.click("#apply")
    pg.wait_for_load_state("networkidle")
    want = rows(srv["catalog"], "SELECT count(*) FROM clips WHERE duration_s > 2")[0][0]
    assert count_on_page(pg) == want and "q=duration_s" in pg.url  # the URL holds the filter
    # a tag facet on top of it
    pg.click("#tag-facet a[data-tag='chase']")
    pg.wait_for_load_state("networkidle")
    want = rows(srv["catalog"], "SELECT count(*) FROM clips WHERE duration_s > 2 AND list_contains(tag_list, 'chase')")
    assert count_on_page(pg) == want[0][0] and "tag=chase" in pg.url
    # hostile filter text: refused with de query's message, nothing breaks
    pg.goto(srv["url"] + "/?q=1%3D1%3B+DROP+TABLE+videos")
    assert pg.inner_text("#error").startswith("Error: ")
    assert rows(srv["catalog"], "SELECT count(*) FROM videos")[0][0] > 0


def test_a_first_page_comes_before_its_count_and_the_page_fills_it_in(page):
    """A filter whose count and facets take a while (a million clips, an ILIKE): the page shows
    its clips and "counting…" at once, and its script swaps in the count, facets and pager."""
    import threading

    pg, srv = page
    gate = threading.Event()
    summaries = srv["browser"].summaries
    real = summaries._compute

    def slow(f):
        gate.wait(30)
        return real(f)

    summaries._compute = slow
    try:
        pg.goto(srv["url"] + "/?tag=kitchen")
        assert pg.inner_text("#count").startswith("counting") and pg.locator("#counting").count() == 1
        assert pg.locator(".card").count() > 0
        gate.set()
        want = rows(srv["catalog"], "SELECT count(*) FROM clips WHERE list_contains(tag_list, 'kitchen')")[0][0]
        assert count_on_page(pg) == want
        pg.wait_for_selector("#tag-facet a[data-tag='chase']")
        assert pg.locator("#counting").count() == 0 and pg.locator("#summary-error").count() == 0
    finally:
        gate.set()
        summaries._compute = real


def test_the_search_box_ranks_captions(page):
    """Typing words in the search box shows the clips ranked as `de query --search` ranks them."""
    from catalog.search import search

    pg, srv = page
    pg.goto(srv["url"] + "/")
    pg.fill("#search", "clip number 7")
    pg.click("#apply")
    pg.wait_for_load_state("networkidle")
    assert "search=clip+number+7" in pg.url and "best first" in pg.inner_text("#count")
    with LIVE["lock"]:
        want = [r["caption"] for r in search("clip number 7", srv["catalog"], limit=3)]
    got = pg.locator(".card .caption").all_inner_texts()[:3]
    assert got == want and got[0].startswith("clip number 7:")
    shot(pg, "search.png")


def test_a_hostile_caption_shows_as_text_and_never_runs(page):
    pg, srv = page
    pg.goto(srv["url"] + "/")
    pg.wait_for_load_state("networkidle")
    card = pg.locator(f".card[data-clip='{srv['hostile']}'] .caption")
    assert card.inner_text() == HOSTILE
    pg.goto(srv["url"] + f"/clip/{srv['hostile']}")
    pg.wait_for_load_state("networkidle")
    assert pg.inner_text("#shown-caption") == HOSTILE
    assert pg.dialogs == []  # no alert() ran


def test_a_clip_plays_inside_its_own_range(page):
    pg, srv = page
    cid, start, end = rows(srv["catalog"], "SELECT clip_id, start_s, end_s FROM clips WHERE video_path LIKE "
                                           "'%h264 cartoon.mp4' AND start_s > 1 ORDER BY start_s LIMIT 1")[0]
    pg.goto(srv["url"] + f"/clip/{cid}")
    pg.wait_for_function("document.getElementById('player').readyState >= 2")
    pg.evaluate("document.getElementById('player').play()")
    pg.wait_for_timeout(1200)
    t = pg.evaluate("document.getElementById('player').currentTime")
    assert start <= t <= end + 0.1, (t, start, end)
    assert t > start + 0.2  # it advanced
    shot(pg, "clip.png")
    # an mkv (no browser codec path): the cached h264 preview plays from 0
    cid2, s2, e2 = rows(srv["catalog"], "SELECT clip_id, start_s, end_s FROM clips WHERE video_path LIKE "
                                        "'%mkv_h264.mkv' ORDER BY start_s LIMIT 1")[0]
    pg.goto(srv["url"] + f"/clip/{cid2}")
    pg.wait_for_function("document.getElementById('player').readyState >= 2", timeout=60000)
    pg.evaluate("document.getElementById('player').play()")
    pg.wait_for_timeout(1200)
    t2 = pg.evaluate("document.getElementById('player').currentTime")
    assert 0.2 < t2 <= (e2 - s2) + 0.1


def test_editing_tags_and_rejecting_change_the_view(page):
    pg, srv = page
    cid = srv["ids"][2]  # seeded with the single tag 'fall'
    pg.goto(srv["url"] + f"/clip/{cid}")
    pg.fill("#tags-input", "chase, Slapstick Fall")
    with pg.expect_navigation():
        pg.click("#save")
    assert pg.dialogs == []
    assert pg.locator("#shown-tags .tag").all_inner_texts() == ["chase", "slapstick_fall"]
    pg.goto(srv["url"] + "/?q=" + "list_contains(tag_list%2C+%27slapstick_fall%27)")
    assert pg.locator(".card").count() == 1 and pg.get_attribute(".card", "data-clip") == cid
    pg.goto(srv["url"] + f"/clip/{cid}")
    with pg.expect_navigation():
        pg.click("#reject")
    assert pg.inner_text("#rejected") == "yes"
    pg.goto(srv["url"] + "/?q=NOT+rejected")
    n = rows(srv["catalog"], "SELECT count(*) FROM clips")[0][0]
    assert count_on_page(pg) == n - 1 and pg.locator(f".card[data-clip='{cid}']").count() == 0
    assert rows(srv["catalog"], "SELECT captioner, rejected FROM clips WHERE clip_id = ?", [cid]) == [("human", True)]


def test_run_page_shows_the_gallery_and_plots(page):
    pg, srv = page
    pg.goto(srv["url"] + "/runs")
    pg.click("text=tiny-run")
    pg.wait_for_load_state("networkidle")
    assert pg.locator("#gallery video").count() >= 2
    assert pg.locator("#plots svg").count() >= 1
    ok = pg.evaluate("""Promise.all(Array.from(document.querySelectorAll('#gallery video')).slice(0, 2).map(v =>
        new Promise(r => { if (v.readyState >= 1) r(v.duration > 0); else { v.onloadedmetadata = () => r(v.duration > 0);
        v.onerror = () => r(false); v.load(); } })))""")
    assert all(ok)
    assert "full prompts" in pg.content()
    shot(pg, "run.png")
