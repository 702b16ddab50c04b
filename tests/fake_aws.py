"""A recording stand-in for the aws CLI v2 that refuses arguments the real one would refuse.

No AWS account is reachable from the test machines and no Elastic Beanstalk emulator exists, so
the deploy scripts run against this program. Every call is checked against botocore's service
model, the same JSON the real CLI is generated from: the operation must exist, every option must
be a member of its input shape (kebab-case, as the CLI spells them), values are converted the
way the CLI converts them (shorthand `Key=value,...`, JSON, lists, booleans, integers, blobs
from files), and the result must pass botocore's ParamValidator plus an enum check (which the
validator skips). A bad call exits 252 with the reason, like the CLI's argument errors.
`--query` is evaluated with JMESPath on a response shaped like the service's, and `--output text`
is printed the way the CLI prints it, so the scripts' own queries are exercised too.

The state (scenario, recorded calls, uploaded bundles) lives in the JSON file $FAKE_AWS_STATE.
`python fake_aws.py engine ...` is the container engine's stand-in (records, marks pushes, and
copies an image into ECR for `buildx imagetools create`; `buildx imagetools inspect` finds only
what `source_manifests` lists, so by default an image has no cosign signature beside it).
With `ecr_registry` ("127.0.0.1:<port>") in the state, ECR is a real registry instead: the
repository's URI names it, `describe-images` by digest or tag asks it over HTTP for the manifest, and
the real docker copies into it (tests/test_ecr_copy.py). With `stop_after_ecr`, every call but
CloudFormation's, STS's and ECR's fails (StoppedByTest), so a deploy ends after its image step.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.loaders
import botocore.model
import jmespath
import jmespath.exceptions
from botocore import xform_name
from botocore.validate import ParamValidator

ACCOUNT = "123456789012"
REGION_DEFAULT = "us-east-1"
DIGEST = "sha256:" + "ab" * 32
GLOBAL_WITH_VALUE = {"--query", "--output", "--region", "--profile", "--endpoint-url"}
GLOBAL_FLAGS = {"--no-cli-pager", "--debug", "--no-paginate"}
CLI_SERVICE = {"s3api": "s3"}  # the CLI's name -> botocore's
# What a registry may hold under a digest: an image index or manifest list, or one manifest.
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip


def registry_digest(registry: str, repository: str, reference: str) -> str | None:
    """The digest of the manifest the registry at registry (host:port, plain HTTP) holds under
    reference (a tag or a digest), None when it holds none."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{reference}", method="HEAD", headers={"Accept": MANIFEST_TYPES}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def in_registry(registry: str, repository: str, digest: str) -> bool:
    """Whether the registry at registry (host:port, plain HTTP) holds a manifest by this digest."""
    return registry_digest(registry, repository, digest) == digest


class CliError(Exception):
    """An error the CLI reports before calling AWS (exit 252)."""


class ServiceError(Exception):
    """An error AWS returns (the CLI exits 254)."""

    def __init__(self, code: str, operation: str, message: str) -> None:
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation: {message}")


def _scalar(text: str, shape: Any, where: str) -> Any:
    kind = shape.type_name
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise CliError(f"{where}: invalid literal for int: {text!r}") from None
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise CliError(f"{where}: expected true or false, got {text!r}")
        return text.lower() == "true"
    if kind == "blob":
        path = Path(text.removeprefix("fileb://").removeprefix("file://"))
        if not path.is_file():
            raise CliError(f"{where}: {text} is not a file")
        return path.read_bytes()
    return text


def _shorthand(text: str, shape: Any, where: str) -> Any:
    """`Key=value,Key2=value2` for a structure of scalars, or JSON."""
    if text.lstrip().startswith(("{", "[")):
        return json.loads(text)
    result: dict[str, Any] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"{where}: expected Key=value in shorthand {text!r}")
        if key not in shape.members:
            raise CliError(f"{where}: unknown key {key!r} (valid: {', '.join(shape.members)})")
        result[key] = _scalar(value, shape.members[key], f"{where}.{key}")
    return result


def _value(values: list[str], shape: Any, where: str) -> Any:
    if shape.type_name == "list":
        if len(values) == 1 and values[0].lstrip().startswith("["):
            return json.loads(values[0])
        member = shape.member
        if member.type_name == "structure":
            return [_shorthand(v, member, where) for v in values]
        return [_scalar(v, member, where) for v in values]
    if len(values) != 1:
        raise CliError(f"{where}: expected one value, got {values}")
    if shape.type_name in ("structure", "map"):
        return _shorthand(values[0], shape, where) if shape.type_name == "structure" else json.loads(values[0])
    return _scalar(values[0], shape, where)


def parse(args: list[str], shape: Any) -> dict[str, Any]:
    """The CLI options of one operation as API parameters."""
    options = {xform_name(name, "-"): name for name in (shape.members if shape else {})}
    params: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise CliError(f"unexpected argument {arg!r}")
        name = arg[2:]
        values: list[str] = []
        i += 1
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        negated = name.startswith("no-") and name[3:] in options
        member = options.get(name[3:] if negated else name)
        if member is None:
            raise CliError(f"Unknown options: --{name}")
        member_shape = shape.members[member]
        if member_shape.type_name == "boolean" and not values:
            params[member] = not negated
        elif not values:
            raise CliError(f"argument --{name}: expected one argument")
        else:
            params[member] = _value(values, member_shape, f"--{name}")
    return params


def enum_errors(value: Any, shape: Any, where: str) -> list[str]:
    if shape.type_name == "structure" and isinstance(value, dict):
        return [
            e for k, v in value.items() if k in shape.members for e in enum_errors(v, shape.members[k], f"{where}.{k}")
        ]
    if shape.type_name == "list" and isinstance(value, list):
        return [e for i, v in enumerate(value) for e in enum_errors(v, shape.member, f"{where}[{i}]")]
    if shape.type_name == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        return [f"{where}: {value!r} is not one of {shape.enum}"]
    return []


def text_output(value: Any) -> str:
    """What `--output text` prints for a query result."""
    if value is None:
        return "None"
    if isinstance(value, list):
        if all(isinstance(v, list) for v in value):
            return "\n".join("\t".join(text_output(x) for x in row) for row in value)
        return "\t".join(text_output(v) for v in value)
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "\t".join(text_output(v) for v in value.values())
    return str(value)


class Fake:
    def __init__(self, state_file: Path) -> None:
        self.file = state_file
        self.state: dict[str, Any] = json.loads(state_file.read_text())

    def save(self) -> None:
        # Atomic: `aws ecr get-login-password | docker login` runs both stand-ins at once, and the
        # engine must never read a half-written file.
        scratch = self.file.with_name(f"{self.file.name}.{os.getpid()}")
        scratch.write_text(json.dumps(self.state, indent=1))
        os.replace(scratch, self.file)

    # Responses, shaped like the services' output shapes, for the calls the scripts make.
    def respond(self, service: str, op: str, p: dict[str, Any]) -> Any:
        s = self.state
        name = xform_name(op, "-")
        if service == "cloudformation" and op == "DescribeStacks":
            if not s.get("stack_exists", True):
                raise ServiceError("ValidationError", op, f"Stack with id {p['StackName']} does not exist")
            outputs = [{"OutputKey": k, "OutputValue": v} for k, v in s.get("outputs", {}).items()]
            parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in s.get("parameters", {}).items()]
            return {"Stacks": [{"StackName": p["StackName"], "Outputs": outputs, "Parameters": parameters}]}
        registry = (
            s.get("ecr_registry") or f"{ACCOUNT}.dkr.ecr.{os.environ.get('AWS_REGION', REGION_DEFAULT)}.amazonaws.com"
        )
        if service == "sts" and op == "GetCallerIdentity":
            return {"Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy/ci", "UserId": "AROA:ci"}
        if service == "ecr" and op == "DescribeRepositories":
            if not s.get("repository_exists", True):
                raise ServiceError("RepositoryNotFoundException", op, "repository does not exist")
            return {
                "repositories": [
                    {"repositoryName": n, "repositoryUri": f"{registry}/{n}"} for n in p["repositoryNames"]
                ]
            }
        if service == "ecr" and op == "CreateRepository":
            s["repository_exists"] = True
            return {
                "repository": {
                    "repositoryName": p["repositoryName"],
                    "repositoryUri": f"{registry}/{p['repositoryName']}",
                }
            }
        if service == "ecr" and op == "DescribeImages":
            wanted = [i["imageDigest"] for i in p.get("imageIds", []) if "imageDigest" in i]
            if wanted and "ecr_registry" in s:  # by digest: what the real registry holds
                found = [d for d in wanted if in_registry(s["ecr_registry"], p["repositoryName"], d)]
                if not found:
                    raise ServiceError("ImageNotFoundException", op, "The image requested does not exist")
                return {"imageDetails": [{"imageDigest": d} for d in found]}
            if wanted:  # by digest: the images copied in (ecr_digests)
                found = [d for d in wanted if d in s.get("ecr_digests", [])]
                if not found:
                    raise ServiceError("ImageNotFoundException", op, "The image requested does not exist")
                return {"imageDetails": [{"imageDigest": d} for d in found]}
            by_tag = [i["imageTag"] for i in p.get("imageIds", []) if "imageTag" in i]
            if by_tag and "ecr_registry" in s:  # by tag: the digest the real registry names with it
                named = {t: registry_digest(s["ecr_registry"], p["repositoryName"], t) for t in by_tag}
                if not any(named.values()):
                    raise ServiceError("ImageNotFoundException", op, "The image requested does not exist")
                return {"imageDetails": [{"imageDigest": d, "imageTags": [t]} for t, d in named.items() if d]}
            if not s.get("image_exists"):
                raise ServiceError("ImageNotFoundException", op, "The image requested does not exist")
            tags = [i.get("imageTag") for i in p.get("imageIds", [])]
            return {"imageDetails": [{"imageDigest": DIGEST, "imageTags": tags}]}
        if service == "elasticbeanstalk":
            return self.beanstalk(op, p)
        if service == "s3" and op == "PutObject":
            uploads = Path(s["uploads"])
            target = uploads / p["Bucket"] / p["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p["Body"])
            return {"ETag": '"etag"'}
        raise CliError(f"the fake aws CLI has no answer for {service} {name}")

    def beanstalk(self, op: str, p: dict[str, Any]) -> Any:
        s = self.state
        versions: dict[str, dict[str, Any]] = s.setdefault("versions", {})
        env = s.setdefault("environment", {"Status": "Ready", "Health": "Green", "VersionLabel": "old"})
        if op == "CreateStorageLocation":
            return {"S3Bucket": f"elasticbeanstalk-{REGION_DEFAULT}-{ACCOUNT}"}
        if op == "DescribeApplicationVersions":
            for label in p.get("VersionLabels", []):
                version = versions.get(label)
                if version and version["Status"] == "PROCESSING":
                    version["Status"] = s.get("version_outcome", "PROCESSED")
            found = [v for label, v in versions.items() if label in p.get("VersionLabels", versions)]
            return {"ApplicationVersions": found}
        if op == "CreateApplicationVersion":
            bundle = p["SourceBundle"]
            uploaded = Path(s["uploads"]) / bundle["S3Bucket"] / bundle["S3Key"]
            if not uploaded.is_file():
                raise ServiceError(
                    "InvalidParameterValue", op, f"no object s3://{bundle['S3Bucket']}/{bundle['S3Key']}"
                )
            if p["VersionLabel"] in versions:
                raise ServiceError("InvalidParameterValue", op, f"version {p['VersionLabel']} already exists")
            versions[p["VersionLabel"]] = {
                "ApplicationName": p["ApplicationName"],
                "VersionLabel": p["VersionLabel"],
                "SourceBundle": bundle,
                "Status": "PROCESSING" if p.get("Process") else "UNPROCESSED",
            }
            return {"ApplicationVersion": versions[p["VersionLabel"]]}
        if op == "UpdateEnvironment":
            label = p["VersionLabel"]
            if versions.get(label, {}).get("Status") != "PROCESSED":
                raise ServiceError("InvalidParameterValue", op, f"version {label} is not processed")
            if env["Status"] != "Ready":
                raise ServiceError("InvalidParameterValue", op, "Environment is in an invalid state for this operation")
            env |= {"Status": "Updating", "Health": "Grey", "target": label}
            return {"EnvironmentName": p["EnvironmentName"], "Status": "Updating"}
        if op == "DescribeEnvironments":
            if env["Status"] == "Updating":
                env["polls"] = env.get("polls", 0) + 1
                if env["polls"] >= 2:  # one poll sees the update in progress, the next its end
                    outcome = s.get("deploy_outcome", "ok")
                    env["Status"] = "Ready"
                    env["Health"] = "Red" if outcome == "red" else "Green"
                    if outcome != "rolled_back":
                        env["VersionLabel"] = env["target"]
            shown = {k: env[k] for k in ("Status", "Health", "VersionLabel")}
            return {"Environments": [{"EnvironmentName": p["EnvironmentNames"][0], **shown}]}
        if op == "DescribeEvents":
            return {
                "Events": [
                    {"EventDate": "2026-12-01T10:00:00Z", "Severity": "ERROR", "Message": m}
                    for m in s.get("events", [])
                ]
            }
        raise CliError(f"the fake aws CLI has no answer for elasticbeanstalk {xform_name(op, '-')}")

    def run(self, argv: list[str]) -> int:
        self.state.setdefault("calls", []).append(argv)
        self.save()  # recorded even when the call fails below
        args, query, output = [], None, "json"
        i = 0
        while i < len(argv):
            if argv[i] in GLOBAL_WITH_VALUE:
                if argv[i] == "--query":
                    query = argv[i + 1]
                elif argv[i] == "--output":
                    output = argv[i + 1]
                i += 2
            elif argv[i] in GLOBAL_FLAGS:
                i += 1
            else:
                args.append(argv[i])
                i += 1
        try:
            if len(args) < 2:
                raise CliError("the following arguments are required: command, operation")
            service, cli_op, rest = args[0], args[1], args[2:]
            if self.state.get("stop_after_ecr") and service not in ("cloudformation", "sts", "ecr"):
                raise ServiceError("StoppedByTest", cli_op, "this test ends the deploy after its image step")
            if output not in ("json", "text", "table", "yaml"):
                raise CliError(f"argument --output: invalid choice: {output!r}")
            try:
                compiled = jmespath.compile(query) if query else None
            except jmespath.exceptions.ParseError as error:
                raise CliError(f"Bad value for --query {query}: {error}") from None
            if (service, cli_op) == ("ecr", "get-login-password"):
                if rest:
                    raise CliError(f"Unknown options: {' '.join(rest)}")
                print("fake-ecr-token")
                return 0
            name = CLI_SERVICE.get(service, service)
            try:
                data = botocore.loaders.create_loader().load_service_model(name, "service-2")
            except botocore.exceptions.UnknownServiceError:
                raise CliError(f"argument command: Invalid choice: {service!r}") from None
            model = botocore.model.ServiceModel(data, service_name=name)
            operations = {xform_name(n, "-"): n for n in model.operation_names}
            if cli_op not in operations:
                raise CliError(f"argument operation: Invalid choice: {cli_op!r}")
            operation = model.operation_model(operations[cli_op])
            params = parse(rest, operation.input_shape)
            if operation.input_shape is not None:
                report = ParamValidator().validate(params, operation.input_shape)
                problems = ([report.generate_report()] if report.has_errors() else []) + enum_errors(
                    params, operation.input_shape, ""
                )
                if problems:
                    raise CliError("Parameter validation failed:\n" + "\n".join(problems))
            response = self.respond(model.service_name if service != "s3api" else "s3", operations[cli_op], params)
        except CliError as error:
            self.state.setdefault("refused", []).append({"call": argv, "error": str(error)})
            self.save()
            print(f"aws: error: {error}", file=sys.stderr)
            return 252
        except ServiceError as error:
            self.save()
            print(str(error), file=sys.stderr)
            return 254
        self.save()
        result = compiled.search(response) if compiled else response
        print(text_output(result) if output == "text" else json.dumps(result, indent=2, default=str))
        return 0


def engine(argv: list[str]) -> int:
    fake = Fake(Path(os.environ["FAKE_AWS_STATE"]))
    fake.state.setdefault("engine", []).append(argv)
    if argv[:1] == ["login"]:
        sys.stdin.read()
    if argv[:1] == ["push"]:
        fake.state["image_exists"] = True
    if argv[:3] == ["buildx", "imagetools", "create"] and fake.state.get("copy_failures", 0) > 0:
        fake.state["copy_failures"] -= 1  # a registry refusing the copy (copy_failures times)
        fake.save()
        print("ERROR: failed commit on ref: 400 Bad Request: blob unknown to registry", file=sys.stderr)
        return 1
    if argv[:3] == ["buildx", "imagetools", "inspect"]:  # the source holds nothing beside the image
        raw = fake.state.get("source_manifests", {}).get(argv[-1])  # {reference: its bytes}, else none
        fake.save()
        if raw is None:
            print(f"ERROR: {argv[-1]}: not found", file=sys.stderr)
            return 1
        sys.stdout.write(raw)
        return 0
    if argv[:3] == ["buildx", "imagetools", "create"]:  # a carbon copy keeps the digest, unless told
        digest = "sha256:" + "ef" * 32 if fake.state.get("copy_changes_digest") else argv[-1].rsplit("@", 1)[1]
        fake.state.setdefault("ecr_digests", []).append(digest)
    fake.save()
    return 0


def install(bin_dir: Path, state: dict[str, Any], state_file: Path, *, engine: bool = True) -> dict[str, str]:
    """Write `aws` and (unless engine is False: the real one runs) `docker` stand-ins into bin_dir;
    returns the environment to run with."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve()
    server = here.with_name("forkserver.py")  # botocore imported once, not on every call
    for tool, mode in (("aws", ""), ("docker", " engine"))[: 2 if engine else 1]:
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{server}" "{here}"{mode} "$@"\n')
        path.chmod(0o755)
    uploads = state_file.parent / "uploads"
    shutil.rmtree(uploads, ignore_errors=True)
    state_file.write_text(json.dumps({"calls": [], "uploads": str(uploads), **state}))
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_AWS_STATE": str(state_file)}


def main(argv: list[str]) -> int:
    if argv[:1] == ["engine"]:
        return engine(argv[1:])
    return Fake(Path(os.environ["FAKE_AWS_STATE"])).run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
