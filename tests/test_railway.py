"""Railway Infrastructure as Code: `.railway/railway.ts` against the official `railway/iac` SDK.

Every Railway answer set of the render matrix (tests/combinations.py, plus the cases below) is
type-checked with `tsc --strict --noEmit` (one run for all files) and evaluated with Node for the
staging and production contexts; each evaluated definition must say what derive() says. A mutated
file shows tsc refusing misspelled and excess properties. The SDK and TypeScript are installed
from the npm registry by tests/railway_iac.py into the temporary folder's fd-railway-sdk (cached per pin set).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from combinations import pairwise, to_answers
from conftest import need, render_template
from deploy_checks import answers as answers_of
from deploy_checks import derived
from railway_iac import ENVIRONMENTS, SdkUnavailable, evaluate, resource, sdk, typecheck

TS_PATH = ".railway/railway.ts"
# The image CI built, by digest: what scripts/deploy.sh passes the file as IMAGE_REF.
IMAGE_REF = "ghcr.io/acme/my-service@sha256:" + "ab" * 32
OTHER_REF = "ghcr.io/acme/my-service@sha256:" + "cd" * 32  # the next commit's
# Every service's source: that image, with Railway's automatic image updates off.
SOURCE = {"type": "image", "image": IMAGE_REF, "autoUpdates": {"type": "disabled"}}
# Beyond the pairwise rows: every engine with Redis and each worker, SQLite, no database, a domain.
EXTRA: list[dict[str, Any]] = [
    {"platforms": ["railway"]},  # the defaults, the project the docs show
    {"platforms": ["railway"], "database": "mysql", "redis": True, "worker": "celery", "sentry": True},
    {"platforms": ["railway"], "database": "postgresql", "redis": True, "worker": "arq", "domain": "api.example.com"},
    {"platforms": ["railway"], "database": "sqlite", "cors_origins": "https://App.example.com, http://localhost:3000"},
    {"platforms": ["railway", "vm"], "database": "none", "server": "gunicorn"},
]
ANSWER_SETS = [a for a in (to_answers(row) for row in pairwise()) if "railway" in a["platforms"]] + EXTRA
# One worker runs this module, so the projects are rendered and evaluated once.
pytestmark = pytest.mark.xdist_group("railway")


@pytest.fixture(scope="module")
def railway_sdk() -> Path:
    try:
        return sdk()
    except SdkUnavailable as exc:
        need(False, f"the railway npm SDK is needed: {exc}")
        raise


@pytest.fixture(scope="module")
def rendered(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One project per Railway answer set, rendered once for this module (tasks skipped)."""
    root = tmp_path_factory.mktemp("railway")
    return {
        f"set{i}": render_template(template_src, root / f"set{i}" / "my-service", **answers)
        for i, answers in enumerate(ANSWER_SETS)
    }


@pytest.fixture(scope="module")
def definitions(
    railway_sdk: Path, rendered: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """{set: {environment: evaluated definition}}, from one Node process for every file."""
    files = {name: (project / TS_PATH).read_text() for name, project in rendered.items()}
    return evaluate(files, tmp_path_factory.mktemp("railway-eval"), env={"IMAGE_REF": IMAGE_REF})


def compiler_options(project: Path) -> dict[str, Any]:
    return json.loads((project / ".railway" / "tsconfig.json").read_text())["compilerOptions"]


def test_every_railway_answer_set_type_checks(railway_sdk: Path, rendered: dict[str, Path], tmp_path: Path) -> None:
    options = {json.dumps(compiler_options(p), sort_keys=True) for p in rendered.values()}
    assert len(options) == 1, "every project ships the same tsconfig.json"
    files = {name: (project / TS_PATH).read_text() for name, project in rendered.items()}
    errors = typecheck(files, tmp_path, json.loads(options.pop()))
    assert not {name: e for name, e in errors.items() if e}, errors


MUTATIONS = {
    # (what is changed, the text replaced, its replacement, the error code tsc must print)
    "misspelled service property": ("healthcheckTimeout:", "healthcheckTimout:", "TS2561"),
    "misspelled deploy property": ("drainingSeconds:", "drainSeconds:", "TS2561"),
    "excess deploy property": (
        "restartPolicyMaxRetries: 10,",
        "restartPolicyMaxRetries: 10, gracePeriod: 5,",
        "TS2353",
    ),
    "wrong enum value": ('restartPolicyType: "ON_FAILURE"', 'restartPolicyType: "ON_ERROR"', "TS2322"),
    "wrong value type": ("healthcheckTimeout: ", "healthcheckTimeout: (s: number) => ", "TS2322"),
}


def test_tsc_refuses_misspelled_and_excess_properties(
    railway_sdk: Path, rendered: dict[str, Path], tmp_path: Path
) -> None:
    project = rendered[f"set{len(ANSWER_SETS) - len(EXTRA)}"]  # the defaults
    source = (project / TS_PATH).read_text()
    files = {"original": source}
    for name, (old, new, _) in MUTATIONS.items():
        assert source.count(old) == 1, f"{name}: {old!r} is not in the file once"
        files[name.replace(" ", "_")] = source.replace(old, new)
    errors = typecheck(files, tmp_path, compiler_options(project))
    print("\n".join(line for lines in errors.values() for line in lines))  # the evidence, with -s
    assert errors["original"] == []
    for name, (_, _, code) in MUTATIONS.items():
        found = errors[name.replace(" ", "_")]
        assert found and all(code in line for line in found), f"{name}: tsc said {found}, wanted {code}"


def test_services_run_ci_s_image_and_registry_credentials_stay_out_of_the_file(
    rendered: dict[str, Path], definitions: dict[str, dict[str, Any]]
) -> None:
    """Issue 13: Railway deploys the image CI built and tested, by digest, like the other
    platforms: every service's source is IMAGE_REF (definition_problems checks each set), none is
    built on Railway, and a private registry's credentials are never in the file: the SDK types
    them as plain strings (preserve() does not type there), so they are set once in the service's
    settings, and the CLI's plan leaves write-only credentials the file does not declare alone."""
    for name, project in rendered.items():
        source = (project / TS_PATH).read_text()
        assert "registryCredentials" not in source and "DOCKERFILE" not in source, name
        slug = answers_of(project)["project_slug"]
        for env in ENVIRONMENTS:
            services = [r for r in definitions[name][env]["resources"] if r["type"] == "service"]
            assert services and all(r["source"] == SOURCE for r in services), (
                name, env, [r.get("source") for r in services])  # fmt: skip
            assert all("build" not in r for r in services), f"{name} {env}: a service is built on Railway"
            assert resource(definitions[name][env], f"service.{slug}")["source"]["image"] == IMAGE_REF
    page = (rendered["set0"] / "docs/deploy/railway.md").read_text()
    section = page.split("## The image CI built", 1)[1].split("\n## ", 1)[0]
    for claim in ("IMAGE_REF", "Pro plan", "Registry Credentials", "public", "registryCredentials"):
        assert claim in section, claim


def test_the_deployments_reader_type_checks_and_reads_railway_s_list(
    railway_sdk: Path, rendered: dict[str, Path], tmp_path: Path
) -> None:
    """deploy/railway/deployments.mjs, what deploy.sh reads Railway's deployment list with: tsc
    --strict --checkJs finds nothing in it, and it reads the list as the CLI prints it (id,
    status, createdAt, meta), by image or by the digest Railway recorded, skipping what the
    baseline held, and refuses what is not a list of deployments."""
    import subprocess

    from railway_iac import node

    project = _project_with(rendered, platforms=["railway"])
    reader = project / "deploy/railway/deployments.mjs"
    options = compiler_options(project) | {"allowJs": True, "checkJs": True}
    assert typecheck({"deployments": reader.read_text()}, tmp_path / "tsc", options, suffix=".mjs") == {
        "deployments": []
    }

    def listed(*deployments: tuple[str, str, dict[str, str]]) -> str:
        return json.dumps([{"id": i, "status": st, "createdAt": "2026-12-02T10:00:00Z", "meta": m}
                           for i, st, m in deployments])  # fmt: skip

    def read(args: list[str], stdin: str, baseline: str = "[]") -> tuple[int, str]:
        (tmp_path / "baseline.json").write_text(baseline)
        result = subprocess.run([str(node()), str(reader), *args], input=stdin, capture_output=True, text=True)
        return result.returncode, (result.stdout + result.stderr).strip()

    old = ("d1", "REMOVED", {"image": IMAGE_REF})
    serving = ("d2", "SUCCESS", {"image": OTHER_REF})
    by_digest = ("d3", "DEPLOYING", {"image": "ghcr.io/acme/renamed", "imageDigest": IMAGE_REF.split("@")[1]})
    release = ["release", IMAGE_REF, str(tmp_path / "baseline.json")]
    assert read(["active"], listed(serving, old)) == (0, OTHER_REF)
    assert read(release, listed(serving, old), baseline=listed(serving, old)) == (0, "absent - -")
    assert read(release, listed(by_digest, serving, old), baseline=listed(serving, old)) == (0, "pending d3 DEPLOYING")
    assert read(["release", OTHER_REF, str(tmp_path / "baseline.json")], listed(serving), listed(serving)) == (
        0, "running d2 SUCCESS")  # fmt: skip
    code, said = read(["active"], '{"error": "Unauthorized"}')
    assert code != 0 and "railway deployment list --json" in said, said


# IMAGE_REF values the file must refuse, each with the reason its message gives.
REFUSED_REFS = {
    "unset": None,
    "a tag": "ghcr.io/acme/my-service:main",
    "a bare Docker Hub name": "acme/my-service@sha256:" + "ab" * 32,
    "a short digest": "ghcr.io/acme/my-service@sha256:abc",
}


def test_the_file_refuses_an_image_not_named_by_digest(
    railway_sdk: Path, rendered: dict[str, Path], tmp_path: Path
) -> None:
    """Without IMAGE_REF, or with a tag, evaluating the file fails, naming IMAGE_REF and the
    form it takes: a plan or apply can never point a service at a mutable tag or at nothing.
    The file's pattern is derive()'s registry rule, the one every deploy script checks."""
    project = _project_with(rendered, platforms=["railway"])
    source = (project / TS_PATH).read_text()
    pattern = derived(project)["image_ref_patterns"]["registry"]
    assert f"new RegExp({json.dumps(pattern)})" in source
    files = {"file": source}
    for case, ref in REFUSED_REFS.items():
        result = evaluate(files, tmp_path / case.replace(" ", "-"), env={} if ref is None else {"IMAGE_REF": ref})
        for env in ENVIRONMENTS:
            message = result["file"][env].get("error", "")
            assert "IMAGE_REF" in message and "@sha256:" in message, (case, result["file"][env])
            assert (ref or "") in message, (case, message)
    taken = evaluate(files, tmp_path / "taken", env={"IMAGE_REF": "docker.io/acme/my-service@sha256:" + "cd" * 32})
    assert all("error" not in taken["file"][env] for env in ENVIRONMENTS), taken


def _variables(service: dict[str, Any]) -> dict[str, Any]:
    return service.get("variables", {})


def definition_problems(
    definition: dict[str, Any], values: dict[str, Any], answers: dict[str, Any], env: str
) -> list[str]:
    """What the evaluated definition for env says differently from derive() (empty when it agrees)."""
    problems: list[str] = []

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{env}: {what} is {got!r}, derive() says {want!r}")

    slug = answers["project_slug"]
    sqlite = answers.get("database") == "sqlite"
    db, redis = values["railway_database"], values["railway_redis"]
    expect("project name", definition["name"], slug)
    expect("environments", definition["environments"], list(ENVIRONMENTS))
    addresses = {f"service.{slug}"}
    addresses |= {f"service.{slug}-worker"} if values["has_worker"] else set()
    addresses |= {f"database.{db['name']}"} if db else set()
    addresses |= {f"database.{redis['name']}"} if redis else set()
    addresses |= {f"volume.{slug}-data"} if sqlite else set()
    expect("resources", {r["address"] for r in definition["resources"]}, addresses)
    if problems:
        return problems

    web = resource(definition, f"service.{slug}")
    deploy, variables = web["deploy"], _variables(web)
    expect("web source", web.get("source"), SOURCE)
    expect("web build (none: CI built the image)", web.get("build"), None)
    expect("health check path", deploy["healthcheckPath"], values["health_ready_path"])
    expect("health check timeout", deploy["healthcheckTimeout"], values["startup_timeout"])
    expect("replicas", deploy["numReplicas"], 1 if sqlite else values["environments"][env]["replicas"])
    expect("restart policy", (deploy["restartPolicyType"], deploy["restartPolicyMaxRetries"]), ("ON_FAILURE", 10))
    expect("drainingSeconds (SIGTERM to SIGKILL)", deploy["drainingSeconds"], values["kill_timeout"])
    expect("overlapSeconds", deploy["overlapSeconds"], 0 if sqlite else values["overlap_seconds"])
    if not deploy["overlapSeconds"] + values["graceful_timeout"] <= deploy["drainingSeconds"]:
        problems.append(f"{env}: overlap + graceful timeout exceed the draining (kill) timeout")
    if not values["graceful_timeout"] < deploy["drainingSeconds"]:
        problems.append(f"{env}: the server's graceful timeout does not fit in drainingSeconds")
    expect("PORT", variables.get("PORT"), {"type": "literal", "value": str(values["app_port"])})
    domain = values["environments"][env]["domain"]
    # No domain answer, no networking at all: an empty map would claim the dashboard's domains.
    custom = web["networking"]["customDomains"] if "networking" in web else None
    expect("custom domains", custom, {domain: {"port": values["app_port"]}} if domain else None)
    if sqlite:
        expect("pre-deploy command", deploy.get("preDeployCommand"), None)
        argv = shlex.split(deploy["startCommand"])
        migrate, _, serve = argv[2].partition(" && exec ")
        expect("start command shell", argv[:2], ["/bin/sh", "-c"])
        expect("migration in the start command", migrate, values["migration_command"])
        expect("server in the start command", shlex.split(serve), values["serve_argv"])
        attachment = web["volumeAttachments"][f"{slug}-data"]
        expect("volume mount", attachment["mountPath"], values["sqlite_volume_path"])
        expect("requiredMountPath", deploy["requiredMountPath"], values["sqlite_volume_path"])
        expect("RAILWAY_RUN_UID", variables.get("RAILWAY_RUN_UID"), {"type": "literal", "value": "0"})
    else:
        expect("start command (the image's CMD)", deploy.get("startCommand"), None)
        want = [values["migration_command"]] if values["has_db"] else None
        expect("pre-deploy command", deploy.get("preDeployCommand"), want)

    expect("ENVIRONMENT", variables.get("ENVIRONMENT"), {"type": "literal", "value": env})
    expect("FORWARDED_ALLOW_IPS", variables.get("FORWARDED_ALLOW_IPS"), {"type": "literal", "value": "*"})
    expect("SECRET_KEY", variables.get("SECRET_KEY"), {"type": "preserve"})
    references = {}
    if db:
        references["DATABASE_URL"] = {"type": "reference", "resource": f"database.{db['name']}", "output": db["output"]}
    if redis:
        references["REDIS_URL"] = {"type": "reference", "resource": f"database.{redis['name']}", "output": "REDIS_URL"}
    for name, want in references.items():
        expect(f"web {name}", variables.get(name), want)
    if sqlite:
        expect("DATABASE_URL (the image's default on the volume)", variables.get("DATABASE_URL"), None)
    if answers.get("sentry"):
        expect("SENTRY_DSN", variables.get("SENTRY_DSN"), {"type": "preserve"})
    cors = ",".join(values["cors_origin_list"])  # the answer normalized, as every platform sets it
    want_cors = {"type": "literal", "value": cors} if cors else {"type": "preserve"}
    expect("CORS_ORIGINS", variables.get("CORS_ORIGINS"), want_cors)

    for node in definition["resources"]:
        if node["type"] == "database":
            # derive()'s resource of that name (railway_database or railway_redis) says what it is.
            spec = next(s for s in (db, redis) if s and s["name"] == node["name"])
            expect(f"{node['name']} engine", node["engine"], spec["engine"])
            expect(f"{node['name']} image", node["image"], spec["image"])
            version = values["redis_version"] if spec is redis else values["db_version"]
            if not node["image"].endswith(f":{version}"):
                problems.append(f"{env}: {node['name']} runs {node['image']}, not the {version} line compose runs")
        # No secret is ever a literal: a preserved value or a reference to one.
        for name, value in _variables(node).items():
            if name in values["secret_env_names"] and value["type"] not in ("preserve", "reference"):
                problems.append(f"{env}: {node['address']} {name} is a {value['type']} value, not a reference")

    if values["has_worker"]:
        worker = resource(definition, f"service.{slug}-worker")
        wdeploy, wvars = worker["deploy"], _variables(worker)
        expect("worker source", worker.get("source"), web.get("source"))
        expect("worker build", worker.get("build"), None)
        expect("worker command", wdeploy["startCommand"], values["worker_command"])
        expect("worker replicas", wdeploy["numReplicas"], 1)
        expect("worker draining", wdeploy["drainingSeconds"], values["kill_timeout"])
        expect("worker health check", wdeploy.get("healthcheckPath"), None)
        expect("worker pre-deploy", wdeploy.get("preDeployCommand"), None)
        expect("worker ENVIRONMENT", wvars.get("ENVIRONMENT"), {"type": "literal", "value": env})
        web_ref = {"type": "reference", "resource": f"service.{slug}", "output": "SECRET_KEY"}
        expect("worker SECRET_KEY (the web's)", wvars.get("SECRET_KEY"), web_ref)
        for name, want in references.items():
            expect(f"worker {name}", wvars.get(name), want)
    return problems


def test_every_evaluated_definition_says_what_derive_says(
    rendered: dict[str, Path], definitions: dict[str, dict[str, Any]]
) -> None:
    problems = []
    for name, project in rendered.items():
        answers, values = answers_of(project), derived(project)
        for env in ENVIRONMENTS:
            problems += [
                f"{name} {answers}: {p}" for p in definition_problems(definitions[name][env], values, answers, env)
            ]
    assert not problems, "\n".join(problems)


def test_an_environment_the_file_does_not_describe_is_refused(definitions: dict[str, dict[str, Any]]) -> None:
    for by_env in definitions.values():
        message = by_env["development"].get("error", "")
        assert '"development"' in message and "staging, production" in message, by_env["development"]


def test_the_comparison_catches_a_drifted_value(
    rendered: dict[str, Path], definitions: dict[str, dict[str, Any]]
) -> None:
    """Change one evaluated value: the comparison reports it (it is no always-true check)."""
    name = f"set{len(ANSWER_SETS) - len(EXTRA)}"
    project = rendered[name]
    drifted = json.loads(json.dumps(definitions[name]["production"]))
    resource(drifted, f"service.{answers_of(project)['project_slug']}")["deploy"]["numReplicas"] = 7
    problems = definition_problems(drifted, derived(project), answers_of(project), "production")
    assert any("replicas is 7" in p for p in problems), problems


def test_no_rendered_project_contains_railway_json(rendered: dict[str, Path]) -> None:
    for project in rendered.values():
        assert not list(project.rglob("railway.json")), project
        text = (project / TS_PATH).read_text()
        assert "_your_" not in text and "password" not in text.lower()
        for platform_file in project.rglob("*"):
            if platform_file.is_file() and platform_file.suffix in (".md", ".sh", ".yml", ".yaml", ".ts"):
                assert "railway.json" not in platform_file.read_text() or platform_file.name == "railway.md", (
                    platform_file
                )


# ---------------------------------------------------------------------------------------------
# deploy/railway/deploy.sh against a recording Railway CLI. The real CLI cannot be installed
# offline (its npm package downloads a binary in a postinstall script), so this one does what
# Railway's docs and the CLI's source (railwayapp/cli: config plan/apply, deployment list --json,
# redeploy --from-source) say the real one does, and fails where it would: it finds
# .railway/railway.ts by walking up, evaluates it with the real SDK for the linked environment
# and the caller's environment (IMAGE_REF, DEPLOY_ENVIRONMENT) with the empty context the CLI's own
# engine passes since 5.42 (railwayapp/cli#1137; context="populated" passes the SDK's), refuses a
# plan while railway.json exists, prints the plan's JSON with the environment it is for (a project
# token's own), answers --detailed-exit-code with 0 or 2, refuses apply without --yes and destructive changes without
# --confirm-destructive, rejects unknown flags, and models Railway's deployments: an apply that
# creates or changes a service deploys its source image (the CLI's change set marks services
# "deployEffect: deploy"), `redeploy --from-source` deploys the configured source again, a new
# deployment passes through the statuses the test gives it (one per `deployment list`), and the
# one that succeeds replaces (REMOVED) the one that served before. `up` is refused: nothing is
# built on Railway.
# ---------------------------------------------------------------------------------------------
FAKE_RAILWAY = r"""#!PYTHON
import json, os, subprocess, sys
from pathlib import Path

EMPTY_CONTEXT = '''
import { pathToFileURL } from "node:url";
try {
  const program = (await import(pathToFileURL(process.argv[2]).href)).default;
  process.stdout.write(JSON.stringify(await program({})));
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error instanceof Error ? error.message : error) }));
}
'''

state_file = Path(os.environ["FAKE_STATE"])
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)

def done(code, message=""):
    state_file.write_text(json.dumps(state))
    if message:
        print(message, file=sys.stderr if code else sys.stdout)
    sys.exit(code)

def value(*names):
    for name in names:
        if name in args:
            return args[args.index(name) + 1]
    return None

FLAGS = {
    ("config", "plan"): {"--detailed-exit-code", "--json", "--show-values", "--verbose"},
    ("config", "apply"): {"--yes", "--confirm-destructive", "--json", "--show-values", "--verbose"},
}
if args == ["--version"]:
    done(0, "railway 5.63.1")
if args[:1] == ["environment"] and len(args) == 2:
    if args[1] not in state["environments"]:
        done(1, f"Environment {args[1]!r} not found")
    state["linked"] = args[1]
    done(0, f"Activated environment {args[1]}")
environment = state["token_environment"] if os.environ.get("RAILWAY_TOKEN") else state.get("linked")

def services(env):
    return {r["name"]: r for r in (state["remote"].get(env) or {}).get("resources", []) if r["type"] == "service"}

def deploy(env, service, image):
    state["counter"] = 1 + sum(len(d) for by in state["deployments"].values() for d in by.values())
    statuses = state.get("outcomes", {}).get(service, ["SUCCESS"])
    state["deployments"].setdefault(env, {}).setdefault(service, []).insert(
        0, {"id": f"dep-{state['counter']}", "image": image, "statuses": list(statuses)})

PENDING = {"BUILDING", "DEPLOYING", "INITIALIZING", "NEEDS_APPROVAL", "QUEUED", "WAITING"}

def evaluate():
    here = Path.cwd()
    for folder in [here, *here.parents]:
        if (folder / ".railway" / "railway.ts").is_file():
            break
    else:
        done(1, "No .railway/railway.ts found in this directory or its parents")
    if (folder / "railway.json").exists():
        done(1, "Service is managed by Config as Code (railway.json): migrate it before IaC can manage it")
    if environment is None:
        done(1, "No linked environment: run railway link")
    # Evaluated beside the file, so "railway/iac" resolves from .railway/node_modules as it must.
    runner = folder / ".railway" / ".evaluate.mjs"
    if state.get("context") == "populated":  # the SDK's context for the environment
        runner.write_text(Path(os.environ["FAKE_EVALUATE"]).read_text())
        argv = [environment, str(folder / ".railway" / "railway.ts")]
    else:  # as src/iac/eval.rs does: exported({})
        runner.write_text(EMPTY_CONTEXT)
        argv = [str(folder / ".railway" / "railway.ts")]
    result = subprocess.run([os.environ["FAKE_NODE"], str(runner), *argv], capture_output=True, text=True)
    if result.returncode != 0:
        done(1, "Failed to evaluate .railway/railway.ts:\n" + result.stderr)
    evaluated = json.loads(result.stdout)
    if state.get("context") == "populated":
        evaluated = next(iter(evaluated.values()))[environment]
    definition = evaluated
    if "error" in definition:
        done(1, "Failed to evaluate .railway/railway.ts: " + definition["error"])
    return definition

if tuple(args[:2]) in FLAGS:
    unknown = [a for a in args[2:] if a not in FLAGS[tuple(args[:2])]]
    if unknown:
        done(2, f"error: unexpected argument '{unknown[0]}' found")
    desired = evaluate()
    current = state["remote"].get(environment)
    changes = desired != current
    if args[1] == "plan":
        state["planned"].append([environment, os.environ.get("IMAGE_REF")])
        code = 2 if changes and "--detailed-exit-code" in args else 0
        if "--json" in args:
            print(json.dumps({"ok": True, "command": "plan", "file": ".railway/railway.ts",
                              "currentEnvironment": {"environmentId": f"env-{environment}",
                                                     "environmentName": environment},
                              "changeSet": {"changes": [{"kind": "update"}] if changes else []},
                              "diagnostics": []}, indent=2))
            done(code)
        done(code, "Plan: changes pending" if changes else "Your Railway configuration is already up to date.")
    if "--yes" not in args:
        done(1, "Refusing to apply without confirmation in a non-interactive session: pass --yes")
    if state.get("destructive") and "--confirm-destructive" not in args:
        done(1, "The plan deletes resources: pass --confirm-destructive to apply it non-interactively")
    before = services(environment)
    state["remote"][environment] = desired
    for name, node in services(environment).items():
        if before.get(name) != node and not state.get("apply_deploys_nothing"):
            deploy(environment, name, (node.get("source") or {}).get("image"))
    done(0, "Applied")

service, env = value("--service", "-s"), value("--environment", "-e")
if args[:2] == ["variable", "list"]:
    if set(a for a in args[2:] if a.startswith("-")) - {"--service", "--environment", "--kv", "--json"}:
        done(2, "error: unexpected argument")
    if state.get("cli_fails"):
        done(1, "Unauthorized. Please run `railway login` again.")
    if service not in services(env):
        done(1, f'Service "{service}" not found.')
    done(0, "\n".join(f"{k}={v}" for k, v in state["variables"].get(env, {}).items()))
if args[:2] == ["deployment", "list"]:
    if set(a for a in args[2:] if a.startswith("-")) - {"--service", "--environment", "--limit", "--json"}:
        done(2, "error: unexpected argument")
    if state.get("cli_fails") or state.get("list_fails"):
        done(1, "Unauthorized. Please run `railway login` again.")
    if "--json" not in args or service not in services(env):
        done(1, f'Service "{service}" not found.')
    listed = state["deployments"].get(env, {}).get(service, [])
    for entry in listed:  # each list shows a pending deployment one status further
        if len(entry["statuses"]) > 1:
            entry["statuses"].pop(0)
        if entry["statuses"] == ["SUCCESS"]:
            for older in listed:
                if older is not entry and older["statuses"] == ["SUCCESS"]:
                    older["statuses"] = ["REMOVED"]
    def meta(e):  # with meta_after_pull, Railway records the image only once it has pulled it
        if state.get("meta_after_pull") and e["statuses"][0] in PENDING:
            return {}
        return {"image": e["image"], "imageDigest": (e["image"] or "@").split("@")[-1]}
    out = [{"id": e["id"], "status": e["statuses"][0], "createdAt": "2026-12-02T10:00:00Z", "meta": meta(e)}
           for e in listed[: int(value("--limit") or 20)]]
    done(0, json.dumps(out, indent=2))
if args[:1] == ["redeploy"]:
    allowed = {"--service", "--environment", "--yes", "--json", "--from-source"}
    if set(a for a in args[1:] if a.startswith("-")) - allowed:
        done(2, "error: unexpected argument")
    if "--yes" not in args:
        done(1, "Cannot prompt in a non-interactive terminal: pass --yes")
    if service not in services(env):
        done(1, "The service specified doesn't exist in the current environment")
    if "--from-source" in args:
        deploy(env, service, (services(env)[service].get("source") or {}).get("image"))
        done(0, json.dumps({"success": True}))
    latest = state["deployments"].get(env, {}).get(service, [])
    if not latest:
        done(1, "No deployment found for service")
    deploy(env, service, latest[0]["image"])
    done(0, json.dumps({"id": f"dep-{state['counter']}"}))
done(2, f"error: unrecognized subcommand {args!r}")
"""


@pytest.fixture
def deploy_run(railway_sdk: Path, tmp_path: Path) -> Any:
    """deploy_run(project, args, **state) -> (result, state): deploy.sh with the recording CLI."""
    import os
    import shutil
    import subprocess
    import sys

    from railway_iac import EVALUATE_JS, NPM_CACHE, node, npm_cli

    def _run(
        project: Path,
        args: list[str],
        *,
        sdk_installed: bool = True,
        real_npm: bool = False,
        files: dict[str, str] | None = None,
        image_ref: str | None = IMAGE_REF,
        **state: Any,
    ) -> Any:
        work = tmp_path / "work" / project.name
        if not work.exists():
            shutil.copytree(project, work, symlinks=True)
            if sdk_installed:
                (work / ".railway" / "node_modules").symlink_to(railway_sdk / "node_modules", target_is_directory=True)
        for name, text in (files or {}).items():
            (work / name).write_text(text)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "railway").write_text(FAKE_RAILWAY.replace("PYTHON", sys.executable, 1))
        (bin_dir / "railway").chmod(0o755)
        if real_npm:  # npm itself, offline, from the cache the SDK was installed with
            (bin_dir / "npm").write_text(
                f'#!/bin/sh\nexec "{node()}" "{npm_cli()}" --offline --cache="{NPM_CACHE}" "$@"\n'
            )
        else:  # npm that cannot reach a registry, as an offline one would
            (bin_dir / "npm").write_text(
                '#!/bin/sh\necho "npm $*" >>"$FAKE_STATE.npm"\necho \'npm error network\' >&2\nexit 1\n'
            )
        (bin_dir / "npm").chmod(0o755)
        (bin_dir / "node").symlink_to(node()) if not (bin_dir / "node").exists() else None
        evaluate_js = tmp_path / "evaluate.mjs"
        evaluate_js.write_text(EVALUATE_JS)
        extra_env = state.pop("env", {})
        state_file = tmp_path / "state.json"
        secret = {"SECRET_KEY": "k" * 48}  # pragma: allowlist secret  (a stand-in, never a real key)
        defaults = {
            "environments": list(ENVIRONMENTS),
            "remote": {},
            "deployments": {},
            "planned": [],
            "calls": [],
            "variables": {env: dict(secret) for env in ENVIRONMENTS},
        }
        state_file.write_text(json.dumps({**defaults, **state}))
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_STATE": str(state_file),
            "FAKE_NODE": str(node()),
            "FAKE_EVALUATE": str(evaluate_js),
            # No waiting between polls, for an apply's deployment to appear, nor after a start.
            "RAILWAY_POLL_SECONDS": "0",
            "RAILWAY_APPEAR_SECONDS": "0",
            "RAILWAY_SETTLE_SECONDS": "0",
        }
        for name in ("RAILWAY_TOKEN", "IMAGE_REF", "DEPLOY_ENVIRONMENT"):
            env.pop(name, None)
        if image_ref is not None:
            env["IMAGE_REF"] = image_ref
        env.update(extra_env)
        result = subprocess.run(
            [str(work / args[0]), *args[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        return result, json.loads(state_file.read_text())

    return _run


def _project_with(rendered: dict[str, Path], **want: Any) -> Path:
    for name, answers in zip(rendered, ANSWER_SETS, strict=True):
        if all(answers.get(k) == v for k, v in want.items()):
            return rendered[name]
    raise AssertionError(f"no Railway answer set has {want}")


def _running(state: dict[str, Any], env: str, service: str) -> list[str]:
    """The images of the service's deployments Railway counts as serving (SUCCESS)."""
    return [d["image"] for d in state["deployments"].get(env, {}).get(service, []) if d["statuses"][-1] == "SUCCESS"]


def _ran(state: dict[str, Any], *prefix: str) -> list[list[str]]:
    return [c for c in state["calls"] if c[: len(prefix)] == list(prefix)]


def test_deploy_applies_ci_s_digest_and_waits_until_railway_runs_it(
    rendered: dict[str, Path], definitions: dict[str, dict[str, Any]], deploy_run: Any
) -> None:
    """A new environment: the apply creates the services with IMAGE_REF as their source, which
    deploys them; the script waits until each deployment of that digest succeeds. Nothing is
    uploaded or built (no `railway up`), nothing redeployed twice."""
    project = _project_with(rendered, worker="celery", database="mysql")
    name = next(n for n, p in rendered.items() if p == project)
    result, state = deploy_run(
        project, ["scripts/deploy.sh", "railway", "staging"],
        outcomes={"my-service": ["INITIALIZING", "DEPLOYING", "SUCCESS"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [c for c in state["calls"] if c[:2] != ["deployment", "list"]]
    assert calls == [
        ["environment", "staging"],
        ["variable", "list", "--service", "my-service", "--environment", "staging", "--kv"],
        ["config", "plan", "--json", "--detailed-exit-code"],
        ["config", "apply", "--yes"],
        ["variable", "list", "--service", "my-service", "--environment", "staging", "--kv"],
    ]
    assert state["planned"] == [["staging", IMAGE_REF]], "the plan saw IMAGE_REF"
    assert state["remote"]["staging"] == definitions[name]["staging"], "apply sent the evaluated staging definition"
    for service in ("my-service", "my-service-worker"):
        assert _running(state, "staging", service) == [IMAGE_REF], service
    assert "dep-1 DEPLOYING" in result.stdout, "it waited while the deployment was DEPLOYING"
    assert f"my-service runs {IMAGE_REF}" in result.stdout
    assert "k" * 48 not in result.stdout + result.stderr, "the secret check printed the secret"


def test_the_same_digest_again_deploys_nothing_and_a_new_one_replaces_it(
    rendered: dict[str, Path], deploy_run: Any
) -> None:
    project = _project_with(rendered, worker="celery", database="mysql")
    _, first = deploy_run(project, ["deploy/railway/deploy.sh", "staging"])
    again, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "staging"], remote=first["remote"], deployments=first["deployments"]
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert not _ran(state, "config", "apply") and not _ran(state, "redeploy") and "nothing to apply" in again.stdout
    assert "already runs" in again.stdout and state["deployments"] == first["deployments"]
    # The next commit's digest: the plan finds the source changed, the apply deploys it.
    new, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "staging"], image_ref=OTHER_REF,
        remote=first["remote"], deployments=first["deployments"],
    )  # fmt: skip
    assert new.returncode == 0, new.stdout + new.stderr
    assert _ran(state, "config", "apply") and not _ran(state, "redeploy")
    for service in ("my-service", "my-service-worker"):
        assert _running(state, "staging", service) == [OTHER_REF], service
    assert f"IMAGE_REF={IMAGE_REF} scripts/deploy.sh railway staging" in new.stdout, "the rollback names the digest"


def test_rolling_back_deploys_the_previous_digest_again(rendered: dict[str, Path], deploy_run: Any) -> None:
    """Roll back = the previous digest as IMAGE_REF. Railway still lists its old deployment
    (REMOVED): the script must not take that for the release; the apply deploys it anew."""
    project = _project_with(rendered, platforms=["railway"])
    _, first = deploy_run(project, ["deploy/railway/deploy.sh", "production"])
    _, second = deploy_run(
        project, ["deploy/railway/deploy.sh", "production"], image_ref=OTHER_REF,
        remote=first["remote"], deployments=first["deployments"],
    )  # fmt: skip
    old = second["deployments"]["production"]["my-service"][-1]
    assert old["image"] == IMAGE_REF and old["statuses"] == ["REMOVED"]
    back, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "production"], remote=second["remote"], deployments=second["deployments"]
    )
    assert back.returncode == 0, back.stdout + back.stderr
    latest = state["deployments"]["production"]["my-service"][0]
    assert latest["image"] == IMAGE_REF and latest["statuses"] == ["SUCCESS"] and latest["id"] != old["id"]
    assert _running(state, "production", "my-service") == [IMAGE_REF]


def test_an_unchanged_file_that_does_not_run_its_image_is_redeployed_from_source(
    rendered: dict[str, Path], deploy_run: Any
) -> None:
    """The source already is IMAGE_REF but its deployment failed (say SECRET_KEY was missing):
    the plan has nothing to apply, so the script asks Railway to deploy the configured source."""
    project = _project_with(rendered, platforms=["railway"])
    _, failed = deploy_run(project, ["deploy/railway/deploy.sh", "staging"], outcomes={"my-service": ["FAILED"]})
    result, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "staging"], remote=failed["remote"], deployments=failed["deployments"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not _ran(state, "config", "apply")
    assert _ran(state, "redeploy") == [
        ["redeploy", "--from-source", "--yes", "--service", "my-service", "--environment", "staging"]
    ]
    assert _running(state, "staging", "my-service") == [IMAGE_REF]


def test_an_apply_whose_deployment_never_appears_is_redeployed_from_source(
    rendered: dict[str, Path], deploy_run: Any
) -> None:
    project = _project_with(rendered, platforms=["railway"])
    result, state = deploy_run(project, ["deploy/railway/deploy.sh", "staging"], apply_deploys_nothing=True)
    assert result.returncode == 0, result.stdout + result.stderr
    redeployed = [c[c.index("--service") + 1] for c in _ran(state, "redeploy")]
    assert "my-service" in redeployed and len(redeployed) == len(set(redeployed)), redeployed
    assert _running(state, "staging", "my-service") == [IMAGE_REF]


@pytest.mark.parametrize("ref", [None, "ghcr.io/acme/my-service:main", "acme/my-service@sha256:" + "ab" * 32])
def test_deploy_refuses_an_image_not_named_by_digest_before_any_railway_call(
    ref: str | None, rendered: dict[str, Path], deploy_run: Any
) -> None:
    project = _project_with(rendered, platforms=["railway"])
    result, state = deploy_run(project, ["deploy/railway/deploy.sh", "staging"], image_ref=ref)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "IMAGE_REF" in result.stderr and "@sha256:" in result.stderr and (ref or "") in result.stderr
    assert state["calls"] == []


def test_deploy_with_a_project_token_uses_its_environment(rendered: dict[str, Path], deploy_run: Any) -> None:
    project = rendered[f"set{ANSWER_SETS.index(EXTRA[3])}"]  # SQLite, no worker
    result, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "production"], token_environment="production", env={"RAILWAY_TOKEN": "t"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not _ran(state, "environment") and state["planned"] == [["production", IMAGE_REF]]
    assert _running(state, "production", "my-service") == [IMAGE_REF]


# The steps in the order the script runs them, and the calls each makes.
STEPS = {
    "sdk": [],
    "link": [["environment"]],
    "secrets": [["variable", "list"]],
    "baseline": [["deployment", "list"]],
    "plan": [["config", "plan"]],
    "apply": [["config", "apply"]],
    "deploy": [["redeploy"]],
}


@pytest.mark.parametrize(
    ("case", "step", "fails_after"),
    [
        ("sdk missing and npm offline", "sdk", []),
        ("environment not on Railway", "link", []),
        ("no SECRET_KEY on the service", "secrets", []),
        ("the CLI cannot read the variables", "secrets", []),
        ("the CLI cannot list the deployments", "baseline", []),
        ("railway.json still there", "plan", []),
        ("a project token of another environment", "plan", []),
        ("the same with the CLI's context", "plan", []),
        ("destructive change", "apply", []),
        ("a new environment without SECRET_KEY", "secrets", ["baseline", "plan", "apply"]),
        ("the deployment fails", "deploy", []),
        ("the deployment crashes", "deploy", []),
        ("it crashes once started", "deploy", []),
        ("a newer deployment supersedes it", "deploy", []),
    ],
)
def test_a_failed_step_stops_the_deploy_and_is_named(
    case: str, step: str, fails_after: list[str], rendered: dict[str, Path], deploy_run: Any
) -> None:
    project = _project_with(rendered, platforms=["railway"])
    existing: dict[str, Any] = {}
    if case in ("no SECRET_KEY on the service", "the deployment crashes", "the CLI cannot read the variables"):
        _, deployed = deploy_run(project, ["deploy/railway/deploy.sh", "staging"])  # staging runs IMAGE_REF
        existing = {"remote": deployed["remote"], "deployments": deployed["deployments"]}
    token = {"token_environment": "production", "env": {"RAILWAY_TOKEN": "t"}}
    state: dict[str, Any] = {
        "sdk missing and npm offline": {"sdk_installed": False},
        "environment not on Railway": {"environments": ["production"]},
        "no SECRET_KEY on the service": {"variables": {"staging": {"PORT": "8000"}}, **existing},
        "the CLI cannot read the variables": {"cli_fails": True, **existing},
        "the CLI cannot list the deployments": {"list_fails": True},
        "railway.json still there": {"files": {"railway.json": '{"deploy": {"numReplicas": 3}}'}},
        "a project token of another environment": token,
        "the same with the CLI's context": {**token, "context": "populated"},
        "destructive change": {"destructive": True},
        "a new environment without SECRET_KEY": {"variables": {"staging": {"PORT": "8000"}}},
        "the deployment fails": {"outcomes": {"my-service": ["DEPLOYING", "FAILED"]}},
        "the deployment crashes": {"outcomes": {"my-service": ["CRASHED"]}, "image_ref": OTHER_REF, **existing},
        "it crashes once started": {"outcomes": {"my-service": ["DEPLOYING", "SUCCESS", "SUCCESS", "CRASHED"]},
                                    "env": {"RAILWAY_SETTLE_SECONDS": "5"}},
        "a newer deployment supersedes it": {"outcomes": {"my-service": ["QUEUED", "SKIPPED"]}},
    }[case]  # fmt: skip
    result, recorded = deploy_run(project, ["deploy/railway/deploy.sh", "staging"], **state)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"stopped at step '{step}'" in result.stderr, result.stderr
    said = {
        "no SECRET_KEY on the service": "SECRET_KEY --stdin --service my-service --environment staging",
        "a new environment without SECRET_KEY": "railway variable set SECRET_KEY --stdin",
        "the CLI cannot read the variables": "Unauthorized",
        "the CLI cannot list the deployments": "Unauthorized",
        "a project token of another environment": "plans the environment 'production', not staging",
        "the same with the CLI's context": 'DEPLOY_ENVIRONMENT is "staging" but the Railway CLI plans "production"',
        "it crashes once started": "went CRASHED after it started",
        "a newer deployment supersedes it": "superseded (SKIPPED)",
    }.get(case)
    if said:
        assert said in result.stderr, result.stderr
    if step == "deploy":
        failed = recorded["deployments"]["staging"]["my-service"][0]
        assert failed["id"] in result.stderr and failed["statuses"][-1] in result.stderr
        if failed["statuses"][-1] in ("FAILED", "CRASHED"):
            assert f"railway logs {failed['id']}" in result.stderr
    order = list(STEPS)
    for after in order[order.index(step) + 1 :]:
        if after in fails_after:
            continue
        for prefix in STEPS[after]:
            assert not _ran(recorded, *prefix), f"{after} ran after {step} failed: {recorded['calls']}"
    if step not in ("baseline", "deploy"):  # nor did anything wait for a deployment
        assert not recorded["calls"] or recorded["calls"][-1][:2] != ["deployment", "list"], recorded["calls"]
    assert not _ran(recorded, "up"), "nothing is uploaded to Railway"
    if case.startswith("a project token") or case.startswith("the same with"):
        assert "production" not in recorded["remote"], "nothing was applied to the token's environment"


def test_a_rerun_waits_for_the_digest_s_deployment_still_under_way(rendered: dict[str, Path], deploy_run: Any) -> None:
    """An earlier run (timed out, or a second CI run of the same digest) left Railway deploying
    IMAGE_REF: the plan has nothing to apply, and the script waits for that deployment instead of
    starting another that would supersede it (and cut its pre-deploy migration short)."""
    project = _project_with(rendered, platforms=["railway"])
    slow = {"my-service": ["DEPLOYING"] * 4 + ["SUCCESS"], "my-service-worker": ["DEPLOYING"] * 4 + ["SUCCESS"]}
    _, first = deploy_run(project, ["deploy/railway/deploy.sh", "staging"], outcomes=slow,
                          env={"RAILWAY_DEPLOY_TIMEOUT": "0"})  # fmt: skip
    assert first["deployments"]["staging"]["my-service"][0]["statuses"][0] == "DEPLOYING"
    result, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "staging"], remote=first["remote"], deployments=first["deployments"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not _ran(state, "redeploy") and not _ran(state, "config", "apply")
    assert [d["id"] for d in state["deployments"]["staging"]["my-service"]] == ["dep-1"]
    assert _running(state, "staging", "my-service") == [IMAGE_REF]


def test_a_deployment_that_names_its_image_only_once_pulled_is_the_release(
    rendered: dict[str, Path], deploy_run: Any
) -> None:
    """Railway records meta.image and imageDigest once it has pulled the image: the apply's new
    deployment, still nameless, is waited for, not superseded by a redeploy."""
    project = _project_with(rendered, platforms=["railway"])
    result, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "staging"], meta_after_pull=True,
        outcomes={"my-service": ["QUEUED", "INITIALIZING", "SUCCESS"]},
        env={"RAILWAY_APPEAR_SECONDS": "30"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert not _ran(state, "redeploy") and _running(state, "staging", "my-service") == [IMAGE_REF]


def test_a_deployment_needing_approval_is_waited_for_and_said(rendered: dict[str, Path], deploy_run: Any) -> None:
    project = _project_with(rendered, platforms=["railway"])
    result, state = deploy_run(
        project, ["deploy/railway/deploy.sh", "staging"],
        outcomes={"my-service": ["NEEDS_APPROVAL", "NEEDS_APPROVAL", "DEPLOYING", "SUCCESS"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("needs approval on Railway") == 1, result.stdout
    assert _running(state, "staging", "my-service") == [IMAGE_REF]


def test_sqlite_file_is_on_the_volume(rendered: dict[str, Path], definitions: dict[str, dict[str, Any]]) -> None:
    """The image's DATABASE_URL puts the SQLite file under the path the volume is mounted at."""
    project = _project_with(rendered, database="sqlite")
    name = next(n for n, p in rendered.items() if p == project)
    web = resource(definitions[name]["production"], f"service.{answers_of(project)['project_slug']}")
    (mount,) = [a["mountPath"] for a in web["volumeAttachments"].values()]
    assert f"ENV DATABASE_URL=sqlite:///{mount}/" in (project / "Dockerfile").read_text()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_ci_deploy_jobs_install_a_cli_the_sdk_accepts(railway_sdk: Path, rendered: dict[str, Path]) -> None:
    """GitHub and GitLab install the pinned CLI, no older than the SDK's own minimum, then run deploy.sh."""
    import re

    import yaml

    sdk_js = (railway_sdk / "node_modules" / "railway" / "dist" / "index.js").read_text()
    minimum = re.search(r'MINIMUM_IAC_CLI_VERSION = "([0-9.]+)"', sdk_js)
    assert minimum, "the SDK no longer names its minimum CLI version"
    checked = set()
    for project in rendered.values():
        ci, pinned = answers_of(project).get("ci", "github"), derived(project)["railway_cli_version"]
        assert _version(pinned) >= _version(minimum[1])
        if ci == "github":
            steps = yaml.safe_load((project / ".github/workflows/deploy-railway.yml").read_text())["jobs"]["deploy"][
                "steps"
            ]
            node = next(s for s in steps if s.get("uses", "").startswith("actions/setup-node@"))
            assert int(node["with"]["node-version"]) >= 22
            runs = [s["run"] for s in steps if "run" in s]
        elif ci == "gitlab":
            jobs = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
            runs = jobs[".deploy-railway"]["script"]
        else:
            continue
        assert f"npm install --global @railway/cli@{pinned}" in "\n".join(runs)
        assert runs[-1].startswith("scripts/deploy.sh railway "), runs
        checked.add(ci)
    assert checked == {"github", "gitlab"}


def test_json_str_is_one_typescript_string_literal() -> None:
    """The filter every answer goes through into railway.ts: Node reads back exactly the text."""
    import importlib.util
    import subprocess

    from railway_iac import node

    spec = importlib.util.spec_from_file_location("fd_filters", Path(__file__).parent.parent / "extensions/filters.py")
    assert spec and spec.loader
    filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filters)
    texts = ['a "quoted" \\ back', "${inject} `tick` */ // <!--", "a && b", "caf\u00e9 \u00fc\u00df"]
    program = "process.stdout.write(JSON.stringify([" + ", ".join(filters.json_str(t) for t in texts) + "]));"
    result = subprocess.run([str(node()), "-e", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == texts
    assert filters.json_str("a && b") == '"a && b"'


def test_deploy_installs_the_pinned_sdk_with_npm(rendered: dict[str, Path], deploy_run: Any, tmp_path: Path) -> None:
    """The sdk step's real npm command installs exactly the pin (offline, from the test's cache)."""
    from railway_iac import packages

    project = _project_with(rendered, platforms=["railway"])
    result, state = deploy_run(project, ["deploy/railway/deploy.sh", "staging"], sdk_installed=False, real_npm=True)
    assert result.returncode == 0, result.stdout + result.stderr
    railway = tmp_path / "work" / project.name / ".railway"
    installed = json.loads((railway / "node_modules" / "railway" / "package.json").read_text())["version"]
    assert installed == packages()["railway"]
    assert not (railway / "node_modules" / "typescript").exists(), "--omit=dev: the type checker is not deployed"
    assert not (railway / "package-lock.json").exists()
    assert _running(state, "staging", "my-service") == [IMAGE_REF]
