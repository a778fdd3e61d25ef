#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The web UI in a real browser (headless Chromium driven by Selenium), as
a new user would use it, against a real vmfs-webd, agent, volume and
guest: the login page refuses a wrong password and takes the right one
(typed, Enter); the datastore page shows capacity in GB and GiB; a folder
made and the guest's kernel and initrd uploaded through the page (file
picker, the files then on the datastore byte for byte) and one downloaded
through its link (the same bytes); the
create-VM wizard's four steps (keyboard: Enter for Next); the new VM in the
inventory tree under its datastore and folder; power on, the state turning
to running without a reload, the kernel's lines in the console; power off,
the state turning to off; delete, the VM gone from the tree and its folder
from the datastore; log out.  Screenshots of every step go to
$UI_SCREENSHOTS (<build>/tests/ui/screenshots/).
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webtest  # noqa: E402
from webtest import DS, vmtest  # noqa: E402


def browser(tmp):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("SKIP: python3-selenium is not installed (scripts/deps.sh installs it)")
        sys.exit(vmtest.SKIP)
    drv = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not os.path.exists(drv) or not shutil.which("chromium"):
        print("SKIP: chromium or chromium-driver is not installed (scripts/deps.sh installs them)")
        sys.exit(vmtest.SKIP)
    o = webdriver.ChromeOptions()
    o.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800", "--user-data-dir=" + tmp,
              # the server's certificate is self-signed; ui-api checks it
              # properly (it pins it as the only trusted certificate)
              "--ignore-certificate-errors"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(drv, log_output=os.path.join(tmp, "chromedriver.log"))
                            if "log_output" in Service.__init__.__code__.co_varnames
                            else Service(drv), options=o)


def body(c):
    vol, mnt, agent = webtest.env_setup(c, "browser")
    shots = os.environ.get("UI_SCREENSHOTS") or os.path.join(vol.work, "screenshots")
    os.makedirs(shots, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ui-chromium-", dir="/var/tmp")
    w = d = None
    try:
        w = webtest.Webd(vol.work, agent).start()
        d = browser(tmp)
        run(c, vol, mnt, agent, w, d, shots, tmp)
    finally:
        if d is not None:
            if c.failures:
                try:
                    d.save_screenshot(os.path.join(shots, "99-failure.png"))
                    print("=== browser console:", d.get_log("browser")[-20:])
                except Exception as e:  # noqa: BLE001  (the report must not hide the failure)
                    print("no failure screenshot: %s" % e)
            d.quit()
        if w:
            if c.failures:
                print("=== vmfs-webd log:\n%s" % w.log()[-4000:])
            w.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        vol.cleanup()
    print("    screenshots in %s" % shots)


def run(c, vol, mnt, agent, w, d, shots, tmp):
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def find(css):
        return d.find_element(By.CSS_SELECTOR, css)

    def safe(cond):
        # the page redraws parts of itself: an element found a moment ago
        # may be gone (stale); that is "not yet", not a failure
        try:
            return cond()
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    def wait(cond, what, timeout=30):
        try:
            return WebDriverWait(d, timeout, poll_frequency=0.25).until(lambda _: safe(cond))
        except TimeoutException:
            raise RuntimeError("browser: waited %d s for %s" % (timeout, what)) from None

    def click(css, what=None):
        """Clicks CSS once it is there (a redraw may replace it between
        the find and the click)."""
        wait(lambda: find(css).click() or True, what or "a clickable " + css)

    def text(css):
        try:
            return find(css).text
        except Exception:
            return ""

    def shot(name):
        d.save_screenshot(os.path.join(shots, name + ".png"))

    # the viewport the UI must be readable at
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    # --- login: a wrong password, then the right one typed and Enter
    d.get(w.url + "/")
    wait(lambda: find("#login-view").is_displayed(), "the login page")
    c.check(not find("#app").is_displayed(), "the app is shown before login")
    find("#login-password").send_keys("not-the-token" + Keys.ENTER)
    wait(lambda: "wrong" in text("#login-error"), "the wrong-password message")
    shot("01-login-refused")
    find("#login-password").send_keys(w.token + Keys.ENTER)
    wait(lambda: find("#app").is_displayed(), "the app after login")
    wait(lambda: "Host" in text("#tree") and DS in text("#tree"), "the inventory tree")
    shot("02-inventory")

    # --- the datastore: capacity in GB and GiB; a folder; uploads
    click('#tree a[href="#/datastore/%s"]' % DS)
    wait(lambda: "GiB" in text(".cap-total"), "the capacity")
    cap = text(".cap-total")
    c.check(" GB (" in cap and "GiB)" in cap, "capacity in GB and GiB: %r" % cap)
    c.check("GB" in text(".cap-free") and "GiB" in text(".cap-prov"), "free and provisioned in GB/GiB")
    click("#ds-mkdir")
    wait(lambda: find("#dialog").is_displayed(), "the new-folder dialog")
    find("#dlg-name").send_keys("boot" + Keys.ENTER)
    wait(lambda: "boot/" in text("#files"), "the new folder listed")
    c.check(os.path.isdir(os.path.join(mnt, "boot")), "the folder on the datastore")
    click('#files a[href*="path=boot"]')
    wait(lambda: "Empty folder" in text("#files"), "the empty folder")
    kernel, initrd = vmtest.guest(compressed=True)   # uploaded: the 8 MiB bzImage
    for f in (kernel, initrd):
        find("#ds-file").send_keys(f)
        wait(lambda: "uploaded " + os.path.basename(f) in text("#upload-status"), "the upload of %s" % f, 120)
        with open(f, "rb") as a, open(os.path.join(mnt, "boot", os.path.basename(f)), "rb") as b:
            c.check(a.read() == b.read(), "%s on the datastore differs from the upload" % f)
    wait(lambda: "initrd.img" in text("#files") and "vmlinuz" in text("#files"), "the uploaded files listed")
    shot("03-datastore-browser")
    # a download through the page's link: the same bytes
    dl = os.path.join(tmp, "downloads")
    os.makedirs(dl, exist_ok=True)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": dl})
    click('#files a[download="initrd.img"]')
    got = os.path.join(dl, "initrd.img")
    wait(lambda: os.path.exists(got) and os.path.getsize(got) == os.path.getsize(initrd), "the download", 60)
    with open(initrd, "rb") as a, open(got, "rb") as b:
        c.check(a.read() == b.read(), "the downloaded initrd.img differs")

    # --- the wizard (Enter moves on: keyboard use)
    click('#tree a[href="#/vms"]')
    wait(lambda: find("#create-vm").is_displayed(), "the VM list")
    click("#create-vm")
    wait(lambda: find("#wiz-name").is_displayed(), "wizard step 1")
    os.makedirs(os.path.join(mnt, "web"))
    d.execute_script("document.querySelector('#wiz-datastore').dispatchEvent(new Event('change'))")
    wait(lambda: [o.text for o in Select(find("#wiz-folder")).options][-1] in ("web", "boot"),
         "the folders of the datastore offered")
    Select(find("#wiz-folder")).select_by_value("web")
    find("#wiz-name").send_keys("web1" + Keys.ENTER)
    wait(lambda: find("#wiz-cpus").is_displayed(), "wizard step 2")
    for k, v in (("cpus", "1"), ("memory", str(vmtest.GUEST_MEM)), ("disk", "0.0625")):
        e = find("#wiz-" + k)
        e.clear()
        e.send_keys(v)
    Select(find("#wiz-prov")).select_by_value("thin")
    click("#wiz-next")
    wait(lambda: find("#wiz-boot").is_displayed(), "wizard step 3")
    # the kernel and initrd found on the datastore are offered
    wait(lambda: find("#wiz-kernel").is_displayed(), "the kernel field")
    c.eq((Select(find("#wiz-boot")).first_selected_option.get_attribute("value"),
          find("#wiz-kernel").get_attribute("value"), find("#wiz-initrd").get_attribute("value")),
         ("kernel", "boot/vmlinuz", "boot/initrd.img"), "the boot media offered")
    find("#wiz-kernel").clear()
    find("#wiz-kernel").send_keys("boot/vmlinuz")
    Select(find("#wiz-net")).select_by_value("none")
    click("#wiz-next")
    wait(lambda: find("#wiz-summary").is_displayed(), "wizard step 4")
    summary = text("#wiz-summary")
    c.check("web1" in summary and "64" not in summary or "0.0625 GiB" in summary, "summary: %r" % summary)
    shot("04-wizard-ready")
    click("#wiz-finish")
    wait(lambda: d.current_url.split("#")[-1].startswith("/vm/"), "the new VM's page", 60)
    wait(lambda: text("#vm-title") == "web1", "the VM's title")
    c.check(os.path.exists(os.path.join(mnt, "web", "web1", "web1.vmx")), "the VM folder on the datastore")
    tree = text("#tree")
    c.check("web/" in tree and "web1" in tree, "the tree shows web/web1: %r" % tree)
    c.eq(text("#vm-state"), "off", "a new VM's state")
    c.check(find("#btn-power-off").get_attribute("disabled") is not None, "power-off enabled while off")

    # --- power on: running without a reload; the console
    click("#btn-power-on")
    wait(lambda: text("#vm-state").startswith("running"), "the state to turn to running", 60)
    c.check(find("#btn-power-on").get_attribute("disabled") is not None, "power-on still enabled when running")
    wait(lambda: "Linux version" in text("#console"), "the kernel in the console", 120)
    wait(lambda: "done" in text("#tasks-table"), "the power-on task done in the tasks pane")
    shot("05-vm-running-console")
    # the host page: this host, and the running VM on its HA protected list
    vm_url = d.current_url
    click('#tree a[href="#/host"]')
    wait(lambda: "web1" in text("#ha-table") and agent.host in text("#hosts-table"), "the host page with HA")
    shot("06-host-ha")
    d.get(vm_url)
    wait(lambda: text("#vm-state").startswith("running"), "the VM page again")

    # --- power off, delete
    click("#btn-power-off")
    wait(lambda: text("#vm-state") == "off", "the state to turn to off", 60)
    shot("07-vm-off")
    click("#btn-destroy")
    wait(lambda: find("#dialog").is_displayed(), "the delete confirmation")
    click("#dialog-ok")
    wait(lambda: d.current_url.endswith("#/vms"), "back to the VM list", 60)
    wait(lambda: "web1" not in text("#tree"), "web1 gone from the tree")
    c.check(not os.path.exists(os.path.join(mnt, "web", "web1")), "the VM folder still on the datastore")
    click('#tab-events')
    wait(lambda: "web1" in text("#events-pane"), "the VM's events")
    shot("08-deleted-events")

    # --- log out
    click("#logout")
    wait(lambda: find("#login-view").is_displayed(), "the login page after logout")
    d.get(w.url + "/")
    wait(lambda: find("#login-view").is_displayed(), "the login page after a reload")


if __name__ == "__main__":
    vmtest.main("ui-browser", body)
