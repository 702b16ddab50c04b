// Reads `railway deployment list --json` (newest first) for deploy.sh, which has no JSON parser.
//
//   node deployments.mjs active < list.json
//       the image, by digest, of the deployment serving now (the newest SUCCESS), or nothing
//   node deployments.mjs release IMAGE_REF BASELINE.json < list.json
//       where the release of IMAGE_REF stands, one line "<verdict> <deployment id> <status>":
//       - the newest deployment that BASELINE.json (the list before the deploy) did not hold and
//         that runs IMAGE_REF, or records no image yet (Railway writes what it pulled once it has
//         pulled it): "pending" while it is in progress, else its status (SUCCESS, FAILED, ...);
//       - "waiting": a newer deployment of another image is still in progress, so nothing may be
//         started over it;
//       - "pending" for a deployment of IMAGE_REF that BASELINE.json held still in progress (an
//         earlier run's): it is waited for, never superseded;
//       - "running": what serves now runs IMAGE_REF already; "absent": none of these.
//   node deployments.mjs status ID < list.json
//       the status of deployment ID, or "absent"
//
// A deployment runs IMAGE_REF when its meta names that image or its digest (meta.imageDigest).
import { readFileSync } from "node:fs";

/**
 * One entry of the list, as the CLI prints it.
 * @typedef {object} Deployment
 * @property {string} id
 * @property {string} status SUCCESS, FAILED, CRASHED, DEPLOYING, ... (Railway's deployment statuses)
 * @property { {image?: string, imageDigest?: string} | null } [meta] what Railway records of its source
 */

// Statuses of a deployment that has not finished (Railway's DeploymentStatus).
const IN_PROGRESS = new Set(["BUILDING", "DEPLOYING", "INITIALIZING", "NEEDS_APPROVAL", "QUEUED", "WAITING"]);

/** @param {string} text @returns {Deployment[]} */
function parse(text) {
  const list = JSON.parse(text);
  if (!Array.isArray(list) || !list.every((d) => typeof d?.id === "string" && typeof d?.status === "string")) {
    throw new Error("railway deployment list --json did not give a list of deployments with id and status");
  }
  return list;
}

/** @param {Deployment} deployment @returns {string} the image by digest, or "" */
function imageOf(deployment) {
  const image = deployment.meta?.image ?? "";
  if (image.includes("@sha256:")) return image;
  const digest = deployment.meta?.imageDigest;
  return image && digest ? `${image.replace(/:[^/:]*$/, "")}@${digest}` : "";
}

/** @param {Deployment} deployment @param {string} ref */
function runs(deployment, ref) {
  const digest = ref.slice(ref.lastIndexOf("@") + 1);
  return deployment.meta?.image === ref || deployment.meta?.imageDigest === digest;
}

/** @param {Deployment} deployment */
function unnamed(deployment) {
  return !deployment.meta?.image && !deployment.meta?.imageDigest;
}

/** @param {Deployment[]} deployments @param {string} ref @param {Deployment[]} baseline */
function release(deployments, ref, baseline) {
  const before = new Set(baseline.map((d) => d.id));
  const added = deployments.filter((d) => !before.has(d.id));
  const ours = added.find((d) => runs(d, ref) || unnamed(d));
  if (ours) return line(IN_PROGRESS.has(ours.status) ? "pending" : ours.status, ours);
  const busy = added.find((d) => IN_PROGRESS.has(d.status));
  if (busy) return line("waiting", busy);
  const earlier = deployments.find((d) => before.has(d.id) && runs(d, ref) && IN_PROGRESS.has(d.status));
  if (earlier) return line("pending", earlier);
  const serving = deployments.find((d) => d.status === "SUCCESS");
  if (serving && runs(serving, ref)) return line("running", serving);
  return "absent - -";
}

/** @param {string} verdict @param {Deployment} deployment */
function line(verdict, deployment) {
  return `${verdict} ${deployment.id} ${deployment.status}`;
}

const [command, ...args] = process.argv.slice(2);
const deployments = parse(readFileSync(0, "utf8"));
if (command === "active" && args.length === 0) {
  const serving = deployments.find((d) => d.status === "SUCCESS");
  console.log(serving ? imageOf(serving) : "");
} else if (command === "release" && args.length === 2) {
  const [ref, baselineFile] = /** @type {[string, string]} */ (args);
  console.log(release(deployments, ref, parse(readFileSync(baselineFile, "utf8"))));
} else if (command === "status" && args.length === 1) {
  console.log(deployments.find((d) => d.id === args[0])?.status ?? "absent");
} else {
  console.error("usage: node deployments.mjs active | release IMAGE_REF BASELINE.json | status ID  (the list on stdin)");
  process.exit(2);
}
