"""The nginx config of the compose stack, run for real in front of the generated app.

nginx from the host (Debian's package) loads deploy/proxy/nginx.conf the way the nginx image
does (included inside `http {}`), in a private network and mount namespace: there `app` resolves
to 127.0.0.1 as it does on the compose network, and port 80 and the app's port are free whatever
the host runs. The generated app is served by its own serve.py behind it. Needs root (namespaces) and nginx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from conftest import PROJECT_ENV, need
from containers import derive

DRIVER = r"""
import json, os, secrets, subprocess, sys, time, urllib.error, urllib.request

project, package, port, live, tmp = sys.argv[1:6]  # live: the liveness path
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
hosts = os.path.join(tmp, "hosts")
with open(hosts, "w") as f:
    f.write("127.0.0.1 localhost\n::1 localhost\n127.0.0.1 app\n")  # the compose service name
subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)

env = dict(os.environ, ENVIRONMENT="production", SECRET_KEY=secrets.token_urlsafe(48), PORT=port)
app_log = open(os.path.join(tmp, "app.log"), "w")
app = subprocess.Popen([os.path.join(project, ".venv", "bin", "python"), "-m", f"{package}.serve"],
                       env=env, cwd=project, stdout=app_log, stderr=subprocess.STDOUT)
conf = os.path.join(tmp, "nginx.conf")
result = {}
try:
    checked = subprocess.run(["nginx", "-t", "-c", conf], capture_output=True, text=True)
    result["nginx_t"] = [checked.returncode, checked.stderr]
    subprocess.run(["nginx", "-c", conf], check=True)

    def get(url, headers=None, data=None):
        request = urllib.request.Request(url, headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode(errors="replace")

    deadline = time.monotonic() + 60
    while True:
        try:
            if get("http://127.0.0.1" + live)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("no 200 through nginx within 60 s")
        time.sleep(0.2)
    result["live"] = get("http://127.0.0.1" + live)
    result["live_v6"] = get("http://[::1]" + live)
    result["given_id"] = get("http://127.0.0.1" + live, {"X-Request-ID": "from-the-client-1"})
    result["missing"] = get("http://127.0.0.1/no-such-route")
    result["too_big"] = get("http://127.0.0.1/no-such-route", data=b"x" * (11 * 1024 * 1024))
finally:
    subprocess.run(["nginx", "-s", "stop", "-c", conf], capture_output=True)
    app.terminate()
    result["app_exit"] = app.wait(timeout=30)
    app_log.close()
print(json.dumps(result))
"""

NGINX_MAIN = """
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    log_format ids '$request_id_out';  # the id nginx sends upstream (see the map in the config)
    access_log {tmp}/access.log ids;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {conf};
}}
"""


def test_nginx_proxies_to_the_app_with_request_ids(project: Callable[..., Path], tmp_path: Path) -> None:
    need(shutil.which("nginx") is not None, "nginx is not installed (Debian: apt-get install nginx-light)")
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare for a private netns")
    # No domain: plain HTTP on port 80 (the TLS server block needs nginx 1.25.1+ for `http2 on`).
    box = project(project_name="Proxied Service", reverse_proxy="nginx", database="none", python_version="3.11")
    conf = box / "deploy" / "proxy" / "nginx.conf"
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(tmp=tmp_path, conf=conf))
    (tmp_path / "driver.py").write_text(DRIVER)
    values = derive(yaml.safe_load((box / ".copier-answers.yml").read_text()))
    package = values["app_module"].split(".", 1)[0]
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--fork", sys.executable, str(tmp_path / "driver.py"),
         str(box), package, str(values["app_port"]), values["health_live_path"], str(tmp_path)],
        capture_output=True, text=True, timeout=180, env=PROJECT_ENV,
    )  # fmt: skip
    app_log = (tmp_path / "app.log").read_text() if (tmp_path / "app.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- app ---\n{app_log[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["nginx_t"][0] == 0, result["nginx_t"][1]
    status, headers, body = result["live"]
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    headers = {k.lower(): v for k, v in headers.items()}
    # nginx made up the request id and the app echoed it (not one of its own): nginx logged it.
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers
    assert headers["x-request-id"] in (tmp_path / "access.log").read_text().split()
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["server"] == "nginx"  # server_tokens off: no version
    assert result["live_v6"][0] == 200  # listen [::]:80
    given = {k.lower(): v for k, v in result["given_id"][1].items()}
    assert given["x-request-id"] == "from-the-client-1"
    status, _, body = result["missing"]
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"  # the app's error shape, not nginx's page
    assert result["too_big"][0] == 413  # client_max_body_size 10m, refused by nginx
    # uvicorn drains, then re-raises SIGTERM so the exit status tells why it stopped (a container's
    # PID 1 ignores that and exits 0).
    assert result["app_exit"] in (0, -15)
    assert "Application shutdown complete" in app_log
    assert '"status": 404' in app_log  # the app logged the proxied request with its id
