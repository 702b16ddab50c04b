// Reads `railway deployment list --json` (newest first) for deploy.sh, which has no JSON parser.
//
//   node deployments.mjs active < list.json
//       the image of the deployment serving now (the newest SUCCESS), or nothing
//   node deployments.mjs release IMAGE_REF BASELINE.json < list.json
//       where the release of IMAGE_REF stands, one line "<verdict> <deployment id>":
//       a deployment of IMAGE_REF that BASELINE.json (the list before the deploy) did not hold
//       gives its own status (SUCCESS, FAILED, DEPLOYING, ...); without one, "running <id>" when
//       the deployment serving now runs IMAGE_REF already, else "absent".
//
// A deployment runs IMAGE_REF when its meta names that image, or its digest (Railway records
// the digest it pulled as meta.imageDigest).
import { readFileSync } from "node:fs";

/**
 * One entry of the list, as the CLI prints it.
 * @typedef {object} Deployment
 * @property {string} id
 * @property {string} status SUCCESS, FAILED, CRASHED, DEPLOYING, ... (Railway's deployment statuses)
 * @property { {image?: string, imageDigest?: string} | null } [meta] what Railway records of its source
 */

/** @param {string} text @returns {Deployment[]} */
function parse(text) {
  const list = JSON.parse(text);
  if (!Array.isArray(list) || !list.every((d) => typeof d?.id === "string" && typeof d?.status === "string")) {
    throw new Error("railway deployment list --json did not give a list of deployments with id and status");
  }
  return list;
}

/** @param {Deployment} deployment @param {string} ref */
function runs(deployment, ref) {
  const digest = ref.slice(ref.lastIndexOf("@") + 1);
  return deployment.meta?.image === ref || deployment.meta?.imageDigest === digest;
}

const [command, ref, baselineFile] = process.argv.slice(2);
const deployments = parse(readFileSync(0, "utf8"));
const serving = deployments.find((d) => d.status === "SUCCESS");
if (command === "active") {
  console.log(serving?.meta?.image ?? "");
} else if (command === "release" && ref && baselineFile) {
  const before = new Set(parse(readFileSync(baselineFile, "utf8")).map((d) => d.id));
  const release = deployments.find((d) => !before.has(d.id) && runs(d, ref));
  if (release) {
    console.log(`${release.status} ${release.id}`);
  } else if (serving && runs(serving, ref)) {
    console.log(`running ${serving.id}`);
  } else {
    console.log("absent -");
  }
} else {
  console.error("usage: node deployments.mjs active | release IMAGE_REF BASELINE.json  (the list on stdin)");
  process.exit(2);
}
