"""A small GitLab pipeline runner for the generated .gitlab-ci.yml (tests/test_gitlab_jobs.py).

What it does as GitLab does:
- `load(path)`: the jobs of the file with `extends` resolved (hashes merged deeply, every other
  value replaced, as GitLab merges) and `default:` applied to the keys a job lacks.
- `pipeline(config, kind)`: the jobs a pipeline of that kind creates (`workflow:rules`, each job's
  `rules:`), with the `when` each rule gives. `rules:` `if:` expressions are evaluated for what
  the file uses (`$VAR`, quoted strings, `==`, `!=`, `&&`, `||`, parentheses); anything else,
  and any rule key but `if`/`when`, raises, so a new construct cannot pass unevaluated.
- `job_env(...)`: GitLab's predefined variables for the pipeline, then the file's `variables:`,
  then the job's, each value expanded against the ones before (as the runner expands them), plus
  the dotenv reports of earlier stages and an `id_tokens:` stand-in token.
- `run_job(...)`: `before_script` then `script`, in one bash with `set -eo pipefail` as GitLab's
  shell does: the job fails at the first failing line. It runs in a private mount namespace whose
  /etc/hosts maps the job's `services:` aliases (and `docker`, the dind service) to 127.0.0.1,
  where this machine's servers answer, and whose /usr/local/bin is a scratch copy (a job copies
  tools there). `network=False` adds a private network namespace (a job that starts a server on
  a fixed port then collides with nothing). A command bash cannot find is logged (MISSING_LOG).
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GLOBAL_KEYS = {"stages", "variables", "workflow", "default"}
# Job keys the runner knows what to do with; any other key of the file fails the run loudly.
JOB_KEYS = {
    "extends", "stage", "image", "services", "variables", "before_script", "script", "rules",
    "artifacts", "cache", "environment", "resource_group", "id_tokens",
}  # fmt: skip
RULE_KEYS = {"if", "when"}
WHENS = {"on_success", "manual", "never"}


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def load(path: Path) -> dict[str, Any]:
    """The file with every job's `extends` resolved; `.hidden` templates are kept, not jobs."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    unknown = {k for k in raw if k in {"include", "after_script", "image", "services", "cache"}}
    assert not unknown, f"top-level keywords this runner does not implement: {unknown}"
    default = raw.get("default", {})

    def resolved(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        assert name not in seen, f"extends cycle: {seen}"
        job = raw[name]
        parents = job.get("extends", [])
        merged: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            merged = _merge(merged, resolved(parent, (*seen, name)))
        merged = _merge(merged, {k: v for k, v in job.items() if k != "extends"})
        return merged

    out = {k: v for k, v in raw.items() if k in GLOBAL_KEYS}
    for name in raw:
        if name in GLOBAL_KEYS:
            continue
        job = resolved(name)
        if not name.startswith("."):
            job = {**copy.deepcopy(default), **job}
            assert set(job) <= JOB_KEYS, f"{name}: keys this runner does not implement: {set(job) - JOB_KEYS}"
        out[name] = job
    return out


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in config.items() if k not in GLOBAL_KEYS and not k.startswith(".")}


# ---- rules: if: ----------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:(\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)|"([^"]*)"|\'([^\']*)\'|(==|!=|&&|\|\||\(|\)))')


def _tokens(expression: str) -> list[tuple[str, str | None]]:
    tokens: list[tuple[str, str | None]] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match:
            raise ValueError(f"rules:if: {expression!r}: cannot evaluate {text[position:]!r} (not implemented)")
        variable, double, single, operator = match.groups()
        if variable:
            tokens.append(("var", variable.strip("${}")))
        elif operator:
            tokens.append(("op", operator))
        else:
            tokens.append(("str", double if double is not None else single))
        position = match.end()
    return tokens


def evaluate(expression: str, env: dict[str, str]) -> bool:
    """A GitLab `rules:if:` expression: `$VAR` alone is true when set and not empty; an unset
    variable compares equal only to another unset one."""
    tokens = _tokens(expression)
    position = 0

    def peek() -> tuple[str, str | None] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str | None]:
        nonlocal position
        if position >= len(tokens):
            raise ValueError(f"rules:if: {expression!r} ends too early")
        position += 1
        return tokens[position - 1]

    def value(token: tuple[str, str | None]) -> str | None:
        kind, text = token
        return env.get(text or "") if kind == "var" else text

    def operand() -> bool:
        token = take()
        if token == ("op", "("):
            result = either()
            assert take() == ("op", ")"), f"rules:if: {expression!r}: unbalanced parentheses"
            return result
        if token[0] == "op":
            raise ValueError(f"rules:if: {expression!r}: unexpected {token[1]}")
        following = peek()
        if following in (("op", "=="), ("op", "!=")):
            operator = take()[1]
            right = take()
            if right[0] == "op":
                raise ValueError(f"rules:if: {expression!r}: {operator} needs a value")
            equal = value(token) == value(right)
            return equal if operator == "==" else not equal
        return bool(value(token))

    def both() -> bool:
        result = operand()
        while peek() == ("op", "&&"):
            take()
            result = operand() and result
        return result

    def either() -> bool:
        result = both()
        while peek() == ("op", "||"):
            take()
            result = both() or result
        return result

    result = either()
    if position != len(tokens):
        raise ValueError(f"rules:if: {expression!r}: trailing {tokens[position:]}")
    return result


def first_rule(rules: list[dict[str, Any]], env: dict[str, str]) -> str | None:
    """The `when` of the first rule that matches, or None when none does."""
    for rule in rules:
        assert set(rule) <= RULE_KEYS, f"rule keys this runner does not implement: {set(rule) - RULE_KEYS}"
        if "if" not in rule or evaluate(rule["if"], env):
            when = rule.get("when", "on_success")
            assert when in WHENS, f"rules: when: {when} is not implemented"
            return str(when)
    return None


# ---- pipelines and variables ------------------------------------------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"


def predefined(kind: str, project_dir: Path, builds_dir: Path) -> dict[str, str]:
    """GitLab's predefined variables for a pipeline of the default branch `main`, a branch
    `feature`, or a merge request from a fork (no CI_COMMIT_BRANCH, no protected variables)."""
    env = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_SHORT_SHA": SHA[:8],
        "CI_DEFAULT_BRANCH": "main",
        "CI_PROJECT_DIR": str(project_dir),
        "CI_BUILDS_DIR": str(builds_dir),
        "CI_PIPELINE_ID": "4242",
        "CI_REGISTRY": "registry.gitlab.example",
        "CI_REGISTRY_IMAGE": "registry.gitlab.example/acme/my-service",
        "CI_SERVER_URL": "https://gitlab.example",
        "CI_PROJECT_PATH": "acme/my-service",
        "CI_PROJECT_URL": "https://gitlab.example/acme/my-service",
        "CI_JOB_ID": "9001",
        "CI_JOB_URL": "https://gitlab.example/acme/my-service/-/jobs/9001",
        "CI_JOB_STARTED_AT": "2026-12-02T10:00:00Z",
        "CI_RUNNER_ID": "12",
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_PASSWORD": "test-job-token",
        "CI_JOB_TOKEN": "test-job-token",
    }
    if kind == "default":
        env |= {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_PROTECTED": "true"}
        env["CI_COMMIT_REF_NAME"] = "main"
    elif kind == "branch":
        env |= {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "feature", "CI_COMMIT_REF_PROTECTED": "false"}
        env["CI_COMMIT_REF_NAME"] = "feature"
    elif kind == "branch-with-mr":
        env |= {
            "CI_PIPELINE_SOURCE": "push",
            "CI_COMMIT_BRANCH": "feature",
            "CI_OPEN_MERGE_REQUESTS": "acme/my-service!7",
        }
    elif kind == "fork-mr":
        env |= {
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_IID": "7",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "main",  # a fork's own main is not ours
            "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH": "stranger/my-service",
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
            "CI_COMMIT_REF_PROTECTED": "false",
        }
    else:
        raise ValueError(kind)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} in a variables: value, as the runner expands them (unset: empty)."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m[1], ""), text)


def variables(config: dict[str, Any], job: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for scope in (config.get("variables", {}), job.get("variables", {})):
        for key, raw in scope.items():
            value = raw["value"] if isinstance(raw, dict) else raw
            env[key] = expand(str(value), env)
    return env


def pipeline(config: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """{job: when} of the pipeline these predefined variables describe ({} when none is created)."""
    workflow = config.get("workflow", {}).get("rules")
    if workflow is not None and first_rule(workflow, env) in (None, "never"):
        return {}
    created: dict[str, str] = {}
    for name, job in jobs(config).items():
        when = first_rule(job["rules"], variables(config, job, env)) if "rules" in job else "on_success"
        if when not in (None, "never"):
            created[name] = when
    return created


def dotenv(path: Path) -> dict[str, str]:
    """A dotenv report as GitLab reads it: KEY=VALUE lines, no quoting, no expansion."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"not a dotenv line: {line!r}"
            found[key] = value
    return found


# ---- running a job ----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    returncode: int
    output: str
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def script_lines(job: dict[str, Any]) -> list[str]:
    lines = [*job.get("before_script", []), *job["script"]]
    assert all(isinstance(line, str) for line in lines), "nested script arrays are not implemented"
    return lines


def shell_script(lines: list[str]) -> str:
    """GitLab's bash: -eo pipefail, each line echoed, the job ends at the first failing line."""
    body = [
        "set -eo pipefail",
        'command_not_found_handle() { printf "%s\\n" "$1" >>"$MISSING_LOG"; '
        'echo "$1: command not found (neither on this machine nor a stand-in)" >&2; return 127; }',
    ]
    for line in lines:
        body += [f"printf '\\n$ %s\\n' {shlex.quote(line)}", line]
    return "\n".join(body) + "\n"


def namespace_prelude(hosts: Path, local_bin: Path, network: bool) -> str:
    """Bind the job's /etc/hosts and scratch /usr/local/bin in a private mount namespace."""
    prelude = f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && "
    prelude += f"mount --bind {shlex.quote(str(local_bin))} /usr/local/bin && "
    if not network:
        prelude += "ip link set lo up && "
    return prelude


def hosts_file(aliases: list[str], dest: Path) -> Path:
    original = Path("/etc/hosts").read_text()
    dest.write_text(original.rstrip("\n") + "\n" + "".join(f"127.0.0.1 {a}\n" for a in aliases))
    return dest


def scratch_local_bin(dest: Path) -> Path:
    """A copy of /usr/local/bin made of links: the job may add files; the machine's stays as it is."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in Path("/usr/local/bin").iterdir():
        target = dest / entry.name
        if not target.exists() and entry.name != "docker":  # the job's docker is its stand-in
            target.symlink_to(entry)
    return dest


def namespaces_work() -> str | None:
    """None when this machine lets the runner make mount and network namespaces, else why not."""
    unshare = shutil.which("unshare")
    if not unshare or not shutil.which("ip"):
        return "unshare (util-linux) or ip (iproute2) is missing"
    probe = subprocess.run([unshare, "--mount", "--net", "true"], capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"unshare --mount --net fails here: {probe.stderr.strip()}"


def run_job(
    name: str,
    job: dict[str, Any],
    env: dict[str, str],
    cwd: Path,
    work: Path,
    network: bool = True,
    timeout: float = 900,
) -> Result:
    lines = script_lines(job)
    work.mkdir(parents=True, exist_ok=True)
    script = work / f"{name}.sh"
    script.write_text(shell_script(lines))
    aliases = ["docker"] + [s["alias"] for s in job.get("services", []) if isinstance(s, dict) and "alias" in s]
    hosts = hosts_file(aliases, work / f"{name}.hosts")
    local_bin = scratch_local_bin(work / f"{name}-usr-local-bin")
    inner = namespace_prelude(hosts, local_bin, network) + f"exec bash {shlex.quote(str(script))}"
    flags = ["--mount"] + ([] if network else ["--net"])
    cmd = ["unshare", *flags, "bash", "-c", inner]
    process = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)  # a server a stand-in left running in the job's session
    return Result(name, process.returncode, output, lines)
