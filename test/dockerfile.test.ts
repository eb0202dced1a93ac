import { execFile, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { promisify } from "node:util";
import { Queue } from "bullmq";
import { Arg, From, Healthcheck, JSONInstruction, type Instruction } from "dockerfile-ast";
import { validate, ValidationSeverity, type ValidatorSettings } from "dockerfile-utils";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyBuildContext, parseDockerfile, replayDockerfile, STEP_RUN, type ReplayedStage } from "./support/dockerfile-replay.js";
import { demoRepo, startFakeHub } from "./support/fake-hub.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";

const run = promisify(execFile);
const dockerfile = parseDockerfile();
const instructions = dockerfile.getInstructions();
const BASE_IMAGE = "node:20-bookworm-slim";
const SYSTEM_RUN = /^apt-get update && apt-get install -y --no-install-recommends tini && rm -rf \/var\/lib\/apt\/lists\/\* && groupadd .* && useradd .*$/;
const tini = spawnSync("sh", ["-c", "command -v tini"], { encoding: "utf8" }).stdout.trim();

/** The instructions of one stage, FROM excluded. */
function stageInstructions(name: string): Instruction[] {
  const froms = instructions.filter((i): i is From => i instanceof From);
  const start = froms.findIndex((f) => f.getBuildStage() === name);
  if (start < 0) throw new Error(`no stage ${name}`);
  const from = froms[start];
  const next = froms[start + 1];
  return instructions.filter((i) => i.getRange().start.line > (from?.getRange().start.line ?? 0) && (next === undefined || i.getRange().start.line < next.getRange().start.line));
}

function healthcheckArgv(): string[] {
  const hc = instructions.find((i): i is Healthcheck => i instanceof Healthcheck);
  const content = hc?.getArgumentsContent() ?? "";
  expect(content.startsWith("CMD ["), "HEALTHCHECK uses the exec form").toBe(true);
  return JSON.parse(content.slice("CMD ".length)) as string[];
}

describe("Dockerfile (lint)", () => {
  it("has no problems by dockerfile-utils' validator, every check an error", () => {
    const everything = Object.fromEntries(
      ["deprecatedMaintainer", "directiveCasing", "emptyContinuationLine", "instructionCasing", "instructionCmdMultiple", "instructionEntrypointMultiple", "instructionHealthcheckMultiple", "instructionJSONInSingleQuotes", "instructionWorkdirRelative"].map((k) => [k, ValidationSeverity.ERROR]),
    ) as ValidatorSettings;
    const problems = validate(fs.readFileSync("Dockerfile", "utf8"), everything);
    expect(problems.map((p) => `${p.range.start.line + 1}: ${p.message}`)).toEqual([]);
  });

  it("builds FROM a pinned node:20-bookworm-slim or an earlier stage, never latest, never ADD", () => {
    const stages: string[] = [];
    for (const from of instructions.filter((i): i is From => i instanceof From)) {
      const image = from.getImageName() ?? "";
      if (!stages.includes(image)) expect(`${image}:${from.getImageTag() ?? ""}`).toBe(BASE_IMAGE);
      stages.push(from.getBuildStage() ?? "");
    }
    expect(stages).toEqual(["build", "model", "runtime"]);
    expect(instructions.map((i) => i.getKeyword())).not.toContain("ADD");
    expect(fs.readFileSync("Dockerfile", "utf8")).not.toMatch(/:latest\b/);
  });

  it("runs as a fixed non-root user, under tini, `clipguard worker` by default", () => {
    const runtime = stageInstructions("runtime");
    const keywords = runtime.map((i) => i.getKeyword());
    const users = runtime.filter((i) => i.getKeyword() === "USER").map((i) => i.getArgumentsContent() ?? "");
    expect(users.at(-1)).toMatch(/^[1-9]\d*:[1-9]\d*$/); // numeric, so Kubernetes' runAsNonRoot can check it
    expect(keywords.lastIndexOf("USER")).toBeLessThan(keywords.indexOf("ENTRYPOINT"));
    const json = (k: string) => runtime.find((i): i is JSONInstruction => i.getKeyword() === k && i instanceof JSONInstruction)?.getJSONStrings().map((s) => s.getJSONValue());
    expect(json("ENTRYPOINT")).toEqual(["/usr/bin/tini", "--", "clipguard"]);
    expect(json("CMD")).toEqual(["worker"]);
    expect(runtime.find((i) => i.getKeyword() === "RUN")?.getArgumentsContent()?.replace(/\s+/g, " ")).toMatch(SYSTEM_RUN);
  });

  it("has one HEALTHCHECK, on /healthz with node's fetch (slim images have no curl)", () => {
    expect(instructions.filter((i) => i.getKeyword() === "HEALTHCHECK")).toHaveLength(1);
    const argv = healthcheckArgv();
    expect(argv.slice(0, 2)).toEqual(["node", "-e"]);
    expect(argv[2]).toContain("/healthz");
  });

  it("copies .npmrc before every npm install, and every step RUN calls a function of scripts/docker-steps.sh", () => {
    const script = fs.readFileSync("scripts/docker-steps.sh", "utf8");
    const defined = [...script.matchAll(/^([a-z_]+)\(\) \{/gm)].map((m) => m[1]);
    const called: string[] = [];
    for (const stage of ["build", "model", "runtime"]) {
      let npmrc = stage === "model"; // inherits the build stage's files
      for (const i of stageInstructions(stage)) {
        if (i.getKeyword() === "COPY" && i.getArguments().some((a) => a.getValue() === ".npmrc")) npmrc = true;
        const step = STEP_RUN.exec(i.getArgumentsContent() ?? "")?.[1];
        if (i.getKeyword() !== "RUN" || step === undefined) continue;
        called.push(step);
        if (step.startsWith("install_")) expect(npmrc, `${stage}: .npmrc copied before ${step}`).toBe(true);
      }
    }
    expect(new Set(called)).toEqual(new Set(defined));
    expect(script).toMatch(/^steps=\((.*)\)$/m);
    expect(new Set(/^steps=\((.*)\)$/m.exec(script)?.[1]?.split(" "))).toEqual(new Set(defined));
  });

  it("takes MODEL (default Xenova/clip-vit-base-patch32) and points CLIPGUARD_MODEL_DIR at it", () => {
    const models = instructions.filter((i): i is Arg => i instanceof Arg && i.getProperty()?.getName() === "MODEL");
    expect(models.map((a) => a.getProperty()?.getValue())).toEqual(["Xenova/clip-vit-base-patch32", "Xenova/clip-vit-base-patch32"]);
    expect(fs.readFileSync("Dockerfile", "utf8")).toMatch(/ENV CLIPGUARD_MODEL_DIR=\/app\/models\/\$\{MODEL\}/);
  });

  it("keeps node_modules, dist, .git, caches and downloaded models out of the build context, but not models/demo", () => {
    const lines = fs.readFileSync(".dockerignore", "utf8").split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
    expect(lines).toEqual(expect.arrayContaining(["node_modules", "dist", ".git", ".cache", "coverage", "models/*", "!models/demo"]));
  });
});

describe("Dockerfile HEALTHCHECK command", () => {
  const servers: http.Server[] = [];
  afterAll(() => servers.forEach((s) => s.close()));

  async function serve(status: number): Promise<number> {
    const server = http.createServer((req, res) => res.writeHead(req.url === "/healthz" ? status : 404).end());
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  }
  async function healthcheck(env: Record<string, string>): Promise<number> {
    const [cmd = "", ...args] = healthcheckArgv();
    const result = await run(cmd === "node" ? process.execPath : cmd, args, { env: { ...env }, timeout: 20_000 }).catch((err: { code?: number }) => err);
    return "code" in result && typeof result.code === "number" ? result.code : 0;
  }
  const unused = async () => {
    const port = await serve(200);
    servers.pop()?.close();
    return String(port);
  };

  it("passes when the worker's metrics server answers /healthz", async () => {
    expect(await healthcheck({ CLIPGUARD_METRICS_PORT: String(await serve(200)), CLIPGUARD_API_PORT: await unused() })).toBe(0);
  });
  it("passes when the API answers /healthz", async () => {
    expect(await healthcheck({ CLIPGUARD_METRICS_PORT: await unused(), CLIPGUARD_API_PORT: String(await serve(200)) })).toBe(0);
  });
  it("fails on an error status or when nothing listens", async () => {
    expect(await healthcheck({ CLIPGUARD_METRICS_PORT: String(await serve(503)), CLIPGUARD_API_PORT: await unused() })).toBe(1);
    expect(await healthcheck({ CLIPGUARD_METRICS_PORT: await unused(), CLIPGUARD_API_PORT: await unused() })).toBe(1);
  });
});

describe("Docker build, replayed without a Docker engine (MODEL=demo)", () => {
  let workspace: string;
  let stages: Map<string, ReplayedStage>;
  let runtime: ReplayedStage;
  let contextFiles: string[];
  const BUILD_LOG = path.resolve(".cache/docker-replay.log");

  beforeAll(async () => {
    workspace = fs.mkdtempSync(path.join(os.tmpdir(), "clipguard-docker-"));
    const context = path.join(workspace, "context");
    contextFiles = await copyBuildContext(process.cwd(), context);
    fs.mkdirSync(path.dirname(BUILD_LOG), { recursive: true });
    fs.writeFileSync(BUILD_LOG, "");
    stages = await replayDockerfile({ ...replayOptions(), context, workspace: path.join(workspace, "stages"), buildArgs: { MODEL: "demo" } });
    const last = stages.get("runtime");
    if (last === undefined) throw new Error("no runtime stage");
    runtime = last;
  }, 420_000); // two `npm ci`s and a tsc build: about 2 minutes on an idle 2-core machine

  afterAll(async () => {
    // two node_modules trees: rm(1) in a child process keeps the test worker responsive
    if (workspace !== undefined) await run("rm", ["-rf", workspace]);
  }, 180_000);

  function replayOptions() {
    return {
      dockerfile,
      // npm's own settings from the environment: the local cache first (the runs here are offline)
      hostEnv: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: os.homedir(), npm_config_prefer_offline: "true", npm_config_update_notifier: "false" },
      skippableRun: (command: string) => SYSTEM_RUN.test(command.replace(/\s+/g, " ")),
      log: (line: string) => fs.appendFileSync(BUILD_LOG, line + "\n"),
    };
  }

  /** The image's environment, with its absolute paths moved under the replayed root. */
  const imageEnv = (): Record<string, string> => ({
    PATH: `${path.join(runtime.root, "usr/local/bin")}:${process.env["PATH"] ?? ""}`,
    ...Object.fromEntries(Object.entries(runtime.env).map(([k, v]) => [k, v.startsWith("/") ? path.join(runtime.root, v) : v])),
  });
  const appDir = () => path.join(runtime.root, runtime.workdir);

  it("sends a context without tests, node_modules or downloaded models", () => {
    expect(contextFiles).toContain("models/demo/onnx/vision_model.onnx");
    expect(contextFiles).toContain(".npmrc");
    expect(contextFiles.filter((f) => /^(node_modules|dist|test|\.git|\.cache)\//.test(f) || (f.startsWith("models/") && !f.startsWith("models/demo/")))).toEqual([]);
  });

  it("ran every build step and skipped only the system packages and user", () => {
    expect(runtime.steps).toEqual(["install_runtime_deps", "finish_runtime"]);
    expect(runtime.skippedRuns).toHaveLength(1);
    expect(runtime.env["CLIPGUARD_MODEL_DIR"]).toBe("/app/models/demo");
    expect(runtime.user).toBe("10001:10001");
  });

  it("ships production dependencies only, and every package the build output imports", () => {
    const app = appDir();
    for (const dev of ["typescript", "vitest", "eslint", "tsx"]) expect(fs.existsSync(path.join(app, "node_modules", dev)), dev).toBe(false);
    const imported = new Set<string>();
    for (const file of fs.readdirSync(path.join(app, "dist/src"), { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".js"))) {
      const code = fs.readFileSync(path.join(app, "dist/src", file), "utf8");
      for (const m of code.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;"']*?from\s*["']([^"'./][^"']*)["']|\bimport\(\s*["']([^"'./][^"']*)["']\s*\)/g)) {
        const spec = m[1] ?? m[2] ?? "";
        if (spec.startsWith("node:")) continue;
        imported.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : (spec.split("/")[0] ?? spec));
      }
    }
    expect(imported.size).toBeGreaterThan(5);
    const missing = [...imported].filter((p) => !fs.existsSync(path.join(app, "node_modules", p, "package.json")));
    expect(missing, "imported by dist/src but not installed with --omit=dev (a devDependency?)").toEqual([]);
    expect(fs.existsSync(path.join(app, "dist/tools"))).toBe(false);
    expect(fs.existsSync(path.join(app, "models/demo/onnx/text_model.onnx"))).toBe(true);
  });

  it("pulls a Hub model with `clipguard model pull` in the model stage (MODEL=owner/name, HF_ENDPOINT=a local fake Hub)", async () => {
    const repo = "clipguard-test/tiny-clip";
    const hub = await startFakeHub({ [repo]: demoRepo() });
    try {
      const logStart = fs.statSync(BUILD_LOG).size;
      const build = stages.get("build");
      if (build === undefined) throw new Error("no build stage");
      const again = await replayDockerfile({
        ...replayOptions(),
        context: path.join(workspace, "context"),
        workspace: path.join(workspace, "hub-stages"),
        buildArgs: { MODEL: repo, HF_ENDPOINT: hub.url },
        reuse: new Map([["build", build]]),
        target: "model",
      });
      const model = again.get("model");
      expect(model?.steps).toEqual(["fetch_model"]);
      // where the runtime stage's CLIPGUARD_MODEL_DIR (/app/models/${MODEL}) will find it
      const dir = path.join(model?.root ?? "", "app/models", repo);
      for (const f of ["config.json", "tokenizer.json", "onnx/text_model.onnx", "onnx/vision_model.onnx"]) expect(fs.existsSync(path.join(dir, f)), f).toBe(true);
      expect(hub.requests.some((r) => r.path.includes(repo))).toBe(true);
      expect(fs.readFileSync(BUILD_LOG).subarray(logStart).toString(), "policies check --model ran on the pulled model").toContain("all prompts embedded");
    } finally {
      await hub.close();
    }
  }, 120_000);

  it("starts `clipguard --help` from the image's PATH", async () => {
    const { stdout } = await run("clipguard", ["--help"], { cwd: appDir(), env: imageEnv() });
    expect(stdout).toMatch(/\bworker\b/);
    expect(stdout).toMatch(/\bscore\b/);
  });

  it("scores an example image with the image's model and policies", async () => {
    const image = path.join(appDir(), "examples/images/red-poster.png");
    const { stdout } = await run("clipguard", ["score", image], { cwd: appDir(), env: imageEnv() });
    const verdict = JSON.parse(stdout) as { decision: string; model: { name: string } };
    expect(verdict.model.name).toBe("clipguard/demo-colour-clip");
    expect(verdict.decision).toBe("block");
  });

  it.skipIf(tini === "")("runs the ENTRYPOINT (tini → clipguard worker; skipped where tini is not installed): takes a job, passes the HEALTHCHECK, exits 0 on SIGTERM", async () => {
    const redisUrl = await testRedisUrl();
    const ns = testNamespace();
    const [entry = "", ...entryArgs] = runtime.entrypoint ?? [];
    const argv = [entry === "/usr/bin/tini" ? tini : entry, ...entryArgs, ...(runtime.cmd ?? [])];
    const env = { ...imageEnv(), REDIS_URL: redisUrl, CLIPGUARD_QUEUE: ns, CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`, CLIPGUARD_METRICS_PORT: "0", CLIPGUARD_METRICS_HOST: "127.0.0.1" };
    const child = spawn(argv[0] ?? "", argv.slice(1), { cwd: appDir(), env, stdio: ["ignore", "ignore", "pipe"] });
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    const logs: string[] = [];
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(ns, { connection: new Redis(redisUrl, { maxRetriesPerRequest: null }) });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        readline.createInterface({ input: child.stderr }).on("line", (line) => {
          logs.push(line);
          if (!line.startsWith("{")) return; // tini warns that it is not PID 1 outside a container
          const entry = JSON.parse(line) as { msg?: string; metricsPort?: number };
          if (entry.msg === "worker ready" && entry.metricsPort !== undefined) resolve(entry.metricsPort);
        });
        void exited.then((code) => reject(new Error(`worker exited ${code}: ${logs.join("\n")}`)));
      });
      const [hcCmd = "", ...hcArgs] = healthcheckArgv();
      await run(hcCmd === "node" ? process.execPath : hcCmd, hcArgs, { env: { CLIPGUARD_METRICS_PORT: String(port) } });
      const base64 = fs.readFileSync(path.join(appDir(), "examples/images/red-poster.png")).toString("base64");
      const job = await queue.add("moderate", { image: { base64 } });
      for (let i = 0; i < 100 && !(await job.isCompleted()); i++) await new Promise((r) => setTimeout(r, 100));
      const done = await queue.getJob(job.id ?? "");
      expect((done?.returnvalue as { decision?: string } | undefined)?.decision).toBe("block");
      child.kill("SIGTERM"); // to tini, which forwards it to node
      expect(await exited).toBe(0);
      expect(logs.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
    } finally {
      child.kill("SIGKILL");
      await queue.close();
      await cleanupNamespace(redis, ns);
      redis.disconnect();
    }
  });
});
