import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import dockerignore from "@balena/dockerignore";
import { Copy, DockerfileParser, Env, JSONInstruction, Run, type Dockerfile } from "dockerfile-ast";

const run = promisify(execFile);
// a CommonJS module whose typings declare `export default`: the module itself is the function
const ignore = dockerignore as unknown as typeof dockerignore.default;

/** The Dockerfile of the repository, parsed. */
export function parseDockerfile(file = "Dockerfile"): Dockerfile {
  return DockerfileParser.parse(fs.readFileSync(file, "utf8"));
}

/** A RUN line that builds the app: `bash scripts/docker-steps.sh FUNCTION ARGS...`. */
export const STEP_RUN = /^bash scripts\/docker-steps\.sh ([a-z_]+)\b/;

/**
 * Copies the build context that `docker build .` would send into `dest`: the files git knows
 * (tracked, or untracked and not ignored) plus the bundled demo model, minus what .dockerignore
 * excludes (with Docker's own matching rules).
 */
export async function copyBuildContext(repo: string, dest: string): Promise<string[]> {
  const { stdout } = await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: repo, maxBuffer: 16 * 1024 * 1024 });
  const demo = fs.readdirSync(path.join(repo, "models/demo"), { recursive: true, encoding: "utf8" }).map((f) => path.posix.join("models/demo", f));
  const rules = ignore().add(fs.readFileSync(path.join(repo, ".dockerignore"), "utf8"));
  const files = [...new Set([...stdout.split("\0"), ...demo])]
    .filter((f) => f !== "" && fs.statSync(path.join(repo, f), { throwIfNoEntry: false })?.isFile() === true)
    .filter(rules.createFilter())
    .sort();
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(dest, f)), { recursive: true });
    fs.copyFileSync(path.join(repo, f), path.join(dest, f));
  }
  return files;
}

/** What a replayed stage ended with: its root directory and the image config it declared. */
export interface ReplayedStage {
  name: string;
  /** The stage's filesystem: `/app` of the image is `${root}/app`. */
  root: string;
  workdir: string;
  env: Record<string, string>;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
  /** RUN lines that were not executed (system packages, users), verbatim. */
  skippedRuns: string[];
  /** docker-steps.sh functions that ran, in order. */
  steps: string[];
}

export interface ReplayOptions {
  dockerfile: Dockerfile;
  context: string;
  /** Directory that receives one root per stage. */
  workspace: string;
  buildArgs: Record<string, string>;
  /** Environment of the RUN lines besides ARG and ENV values (PATH, HOME, npm settings). */
  hostEnv: Record<string, string>;
  /** RUN lines that may be skipped: they set up the OS (apt-get, useradd), not the app. */
  skippableRun: (command: string) => boolean;
  /** Stages replayed before, reused as they are (their instructions are not run again). */
  reuse?: Map<string, ReplayedStage>;
  /** The last stage to replay. */
  target?: string;
  log?: (line: string) => void;
}

/** `${NAME}` and `$NAME` as Docker expands them in ENV, WORKDIR and COPY. */
function expand(text: string, vars: Record<string, string>): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a?: string, b?: string) => vars[a ?? b ?? ""] ?? "");
}

/** Docker's COPY: a directory source copies its contents; several sources need a directory destination. */
function dockerCopy(sources: string[], dest: string): void {
  const intoDir = dest.endsWith("/") || sources.length > 1;
  for (const src of sources) {
    if (!fs.existsSync(src)) throw new Error(`COPY source ${src} does not exist`);
    if (fs.statSync(src).isDirectory()) {
      fs.mkdirSync(dest, { recursive: true });
      fs.cpSync(src, dest, { recursive: true, verbatimSymlinks: true });
    } else {
      const target = intoDir ? path.join(dest, path.basename(src)) : dest;
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.copyFileSync(src, target);
    }
  }
}

async function runStep(command: string, cwd: string, env: Record<string, string>, log: (line: string) => void): Promise<void> {
  const started = Date.now();
  const child = spawn("/bin/sh", ["-c", command], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr.on("data", (d: Buffer) => (output += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  log(`RUN ${command} -> ${code} (${((Date.now() - started) / 1000).toFixed(1)} s)\n${output}`);
  if (code !== 0) throw new Error(`RUN ${command} exited ${code}:\n${output.slice(-4000)}`);
}

/**
 * Replays a Dockerfile without a Docker engine: each stage gets a directory as its root; FROM a
 * previous stage starts from a (hard-linked) copy of it; ARG, ENV and WORKDIR are tracked; COPY
 * copies from the context or `--from` a stage; RUN lines run with `/bin/sh -c`, as Docker runs
 * them, in the stage's WORKDIR with the ARG and ENV values in their environment and
 * DOCKER_STEPS_ROOT set to the stage root. Instructions the replay cannot honour fail it.
 */
export async function replayDockerfile(options: ReplayOptions): Promise<Map<string, ReplayedStage>> {
  const log = options.log ?? (() => undefined);
  const stages = new Map<string, ReplayedStage>();
  let stage: ReplayedStage | undefined;
  let args: Record<string, string> = {};
  let reused = false;
  fs.mkdirSync(options.workspace, { recursive: true });
  const inRoot = (s: ReplayedStage, p: string) => path.join(s.root, path.posix.resolve(s.workdir, p));

  for (const instruction of options.dockerfile.getInstructions()) {
    const keyword = instruction.getKeyword();
    if (keyword === "FROM") {
      const [image, as, name] = instruction.getArguments().map((a) => a.getValue());
      if (image === undefined || as?.toUpperCase() !== "AS" || name === undefined) throw new Error("every FROM must name its stage");
      if (stage !== undefined && stage.name === options.target) break;
      const earlier = options.reuse?.get(name);
      reused = earlier !== undefined;
      if (earlier !== undefined) {
        stages.set(name, earlier);
        continue;
      }
      const root = path.join(options.workspace, name);
      const parent = stages.get(image);
      if (parent !== undefined) {
        await run("cp", ["-al", parent.root, root]);
        stage = { ...parent, name, root, env: { ...parent.env }, skippedRuns: [], steps: [] };
      } else {
        fs.mkdirSync(root, { recursive: true });
        stage = { name, root, workdir: "/", env: {}, skippedRuns: [], steps: [] };
      }
      stages.set(name, stage);
      args = {};
      continue;
    }
    if (reused) continue;
    if (stage === undefined) throw new Error(`${keyword} before the first FROM`);
    const current = stage;
    const vars = { ...args, ...current.env };
    switch (keyword) {
      case "ARG": {
        for (const a of instruction.getArguments()) {
          const [name = "", ...rest] = a.getValue().split("=");
          args[name] = options.buildArgs[name] ?? rest.join("=");
        }
        break;
      }
      case "ENV": {
        if (!(instruction instanceof Env)) throw new Error("ENV was not parsed as such");
        for (const p of instruction.getProperties()) {
          current.env[p.getName()] = expand(p.getValue() ?? "", vars);
        }
        break;
      }
      case "WORKDIR":
        current.workdir = path.posix.resolve(current.workdir, expand(instruction.getArgumentsContent() ?? "/", vars));
        fs.mkdirSync(path.join(current.root, current.workdir), { recursive: true });
        break;
      case "COPY": {
        if (!(instruction instanceof Copy)) throw new Error("COPY was not parsed as such");
        const flags = instruction.getFlags();
        const unknown = flags.filter((f) => f.getName() !== "from");
        if (unknown.length > 0) throw new Error(`COPY flag --${unknown[0]?.getName()} is not replayed`);
        const from = flags.find((f) => f.getName() === "from")?.getValue() ?? undefined;
        const parts = instruction.getArguments().map((a) => expand(a.getValue(), vars));
        const dest = parts.pop();
        if (dest === undefined || parts.length === 0) throw new Error("COPY needs a source and a destination");
        if (parts.some((p) => /[*?[]/.test(p))) throw new Error("COPY wildcards are not replayed");
        const source = from === undefined ? undefined : stages.get(from);
        if (from !== undefined && source === undefined) throw new Error(`COPY --from=${from}: no such stage`);
        const sources = parts.map((p) => (source === undefined ? path.join(options.context, p) : path.join(source.root, p)));
        const target = inRoot(current, dest) + (dest.endsWith("/") ? "/" : "");
        dockerCopy(sources, target);
        break;
      }
      case "RUN": {
        if (!(instruction instanceof Run)) throw new Error("RUN was not parsed as such");
        // cache mounts only speed up a real build; any other flag would change what RUN does
        const flags = instruction.getFlags().map((f) => `${f.getName()}=${f.getValue() ?? ""}`);
        if (flags.some((f) => !f.startsWith("mount=type=cache,"))) throw new Error(`RUN flags ${flags.join(" ")} are not replayed`);
        const command = instruction.getArgumentsContent() ?? "";
        const step = STEP_RUN.exec(command);
        if (step === null) {
          if (!options.skippableRun(command)) throw new Error(`RUN line that the replay cannot run: ${command}`);
          current.skippedRuns.push(command);
          break;
        }
        current.steps.push(step[1] ?? "");
        const env = { ...options.hostEnv, ...vars, DOCKER_STEPS_ROOT: current.root };
        await runStep(command, path.join(current.root, current.workdir), env, log);
        break;
      }
      case "USER":
        current.user = instruction.getArgumentsContent() ?? undefined;
        break;
      case "ENTRYPOINT":
      case "CMD": {
        if (!(instruction instanceof JSONInstruction)) throw new Error(`${keyword} was not parsed as such`);
        const argv = instruction.getJSONStrings().map((s) => s.getJSONValue());
        if (keyword === "CMD") current.cmd = argv;
        else current.entrypoint = argv;
        break;
      }
      case "EXPOSE":
      case "HEALTHCHECK":
      case "LABEL":
        break; // image metadata, checked by the lint tests
      default:
        throw new Error(`${keyword} is not replayed`);
    }
  }
  return stages;
}
