import os from "node:os";
import { z } from "zod";
import { ClipguardError } from "./errors.js";
import { bundledPath } from "./package-paths.js";

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"])
  .transform((v) => v === "true" || v === "1" || v === "yes");
const csv = z.string().transform((v) =>
  v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
);

/**
 * Every environment variable clipguard reads, with its default. The README's configuration table
 * mirrors this schema (a test checks that every variable here is documented).
 */
const envSchema = z.object({
  CLIPGUARD_MODEL_DIR: z.string().min(1).default(bundledPath("models", "demo")),
  CLIPGUARD_MODEL_VARIANT: z.string().regex(/^[a-z0-9]+$/, "letters and digits only, e.g. quantized or fp16").optional(),
  CLIPGUARD_POLICIES: z.string().min(1).default(bundledPath("examples", "policies.yaml")),
  CLIPGUARD_MAX_IMAGE_BYTES: intFrom(1, 1024 * 1024 * 1024).default(20 * 1024 * 1024),
  CLIPGUARD_MAX_PIXELS: intFrom(1, 1_000_000_000).default(40_000_000),
  CLIPGUARD_FAST_JPEG: bool.default(true),
  CLIPGUARD_DECODE_THREADS: intFrom(1, 256).default(1),
  // measured on 2 cores (README "Performance"): 1 slows the engine by ~15 %; 2 and 4 are alike
  CLIPGUARD_DECODE_CONCURRENCY: intFrom(1, 256).default(4),
  CLIPGUARD_ORT_THREADS: intFrom(1, 256).default(Math.max(1, os.availableParallelism())),
  CLIPGUARD_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** Image-embedding cache of `clipguard eval` (`--cache`); unset: `<out>/embeddings`. */
  CLIPGUARD_EVAL_CACHE: z.string().min(1).optional(),

  REDIS_URL: z.string().url().default("redis://127.0.0.1:6379"),
  CLIPGUARD_QUEUE: z.string().regex(/^[A-Za-z0-9_.-]+$/).default("moderation"),
  CLIPGUARD_PREFIX: z.string().regex(/^[A-Za-z0-9_.:-]+$/).default("bull"),
  CLIPGUARD_VERDICT_STREAM: z.string().min(1).default("clipguard:verdicts"),
  CLIPGUARD_VERDICT_STREAM_MAXLEN: intFrom(1, 1_000_000_000).default(100_000),
  CLIPGUARD_CONCURRENCY: intFrom(1, 256).default(16),
  CLIPGUARD_INFERENCE_THREADS: intFrom(1, 64).default(1),
  CLIPGUARD_BATCH_MAX: intFrom(1, 256).default(16),
  CLIPGUARD_BATCH_WAIT_MS: intFrom(0, 1000).default(2),
  CLIPGUARD_INFERENCE_TIMEOUT_MS: intFrom(0, 3_600_000).default(60_000),
  CLIPGUARD_EMBEDDING_TTL: intFrom(0, 365 * 24 * 3600).default(7 * 24 * 3600),
  CLIPGUARD_FRAMES_MAX: intFrom(1, 64).default(8),
  CLIPGUARD_FRAMES_COMBINE: z.enum(["max", "any-k"]).default("max"),
  CLIPGUARD_FRAMES_K: intFrom(1, 64).default(2),
  CLIPGUARD_TILES_RATIO: z.coerce.number().min(1).max(100).default(2),
  CLIPGUARD_TILES_MAX: intFrom(0, 256).default(9),
  CLIPGUARD_REVIEW_STREAM: z.string().min(1).default("clipguard:review"),
  CLIPGUARD_RESCORE_STREAM: z.string().min(1).default("clipguard:rescored"),
  CLIPGUARD_JOB_ATTEMPTS: intFrom(1, 100).default(5),
  CLIPGUARD_KEEP_COMPLETED: intFrom(0, 10_000_000).default(1000),
  CLIPGUARD_KEEP_FAILED: intFrom(0, 10_000_000).default(5000),
  CLIPGUARD_LOCK_DURATION_MS: intFrom(1000, 3_600_000).default(30_000),
  CLIPGUARD_STALLED_INTERVAL_MS: intFrom(500, 3_600_000).default(30_000),
  /** Times a job may stall (its worker killed, its lock lost) before it gets a CLIPGUARD_E_JOB_STALLED error verdict. */
  CLIPGUARD_MAX_STALLS: intFrom(0, 1000).default(3),
  CLIPGUARD_SHUTDOWN_GRACE_MS: intFrom(0, 3_600_000).default(30_000),
  CLIPGUARD_METRICS_PORT: intFrom(0, 65535).default(9464),
  CLIPGUARD_METRICS_HOST: z.string().min(1).default("0.0.0.0"),
  CLIPGUARD_FETCH_TIMEOUT_MS: intFrom(1, 600_000).default(10_000),
  CLIPGUARD_FETCH_MAX_REDIRECTS: intFrom(0, 20).default(3),
  CLIPGUARD_ALLOW_PRIVATE_URLS: bool.default(false),
  CLIPGUARD_WEBHOOK_SECRET: z.string().min(1).optional(),
  CLIPGUARD_WEBHOOK_TIMEOUT_MS: intFrom(1, 600_000).default(10_000),
  CLIPGUARD_WEBHOOK_ATTEMPTS: intFrom(1, 50).default(5),
  CLIPGUARD_TEXT_CACHE_TTL_S: intFrom(0, 365 * 24 * 3600).default(30 * 24 * 3600),
  CLIPGUARD_REF_TTL_S: intFrom(1, 7 * 24 * 3600).default(3600),
  CLIPGUARD_WATCH_POLICIES: bool.default(true),
  CLIPGUARD_ALLOWED_HOSTS: csv.default([]),

  // HTTP API (`clipguard api`)
  CLIPGUARD_API_PORT: intFrom(0, 65535).default(8080),
  CLIPGUARD_API_HOST: z.string().min(1).default("0.0.0.0"),
  /** Bearer keys accepted by the API; empty refuses to start unless CLIPGUARD_API_AUTH=off. */
  CLIPGUARD_API_KEYS: csv.default([]),
  CLIPGUARD_API_AUTH: z.enum(["on", "off"]).default("on"),
  CLIPGUARD_API_WAIT_MS: intFrom(0, 600_000).default(10_000),
  CLIPGUARD_API_RATE_LIMIT: intFrom(1, 1_000_000).default(600),

  // Hugging Face Hub (`clipguard model pull`)
  HF_ENDPOINT: z
    .string()
    .url()
    .regex(/^https?:\/\//, "an http(s) URL")
    .transform((v) => v.replace(/\/+$/, ""))
    .default("https://huggingface.co"),
  /** Sent as `Authorization: Bearer` to HF_ENDPOINT only; never logged. */
  HF_TOKEN: z.string().min(1).optional(),
});

export type Config = Readonly<z.infer<typeof envSchema>>;

/** Names of every variable the config reads (for the README check and `--help`). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(envSchema.shape);

/**
 * Read and validate the environment once. Reports every bad variable in one error.
 * Empty strings count as unset, so `FOO= clipguard …` falls back to the default.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const relevant: Record<string, string> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name];
    if (value !== undefined && value !== "") relevant[name] = value;
  }
  const parsed = envSchema.safeParse(relevant);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `invalid environment: ${lines.join("; ")}`);
  }
  return Object.freeze(parsed.data);
}
