# syntax=docker/dockerfile:1
#
# clipguard: `docker build -t clipguard .` bakes in Xenova/clip-vit-base-patch32 (fp32);
# `--build-arg MODEL=demo` uses the bundled demo model instead (no download; for trying things out).
# Other build arguments: MODEL_REVISION (a commit of the model repository; pin it for reproducible
# images), MODEL_VARIANT (e.g. quantized; empty means fp32) and HF_ENDPOINT (a Hub mirror).
#
# Every build step is a function of scripts/docker-steps.sh: test/dockerfile.test.ts replays this
# file's COPY/ENV/RUN lines without a Docker engine and runs those functions, so keep each RUN that
# builds the app a single call to that script.

# ---- build: all dependencies, compile TypeScript --------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
# .npmrc first: it has onnxruntime-node-install=skip (no GPU libraries downloaded)
COPY package.json package-lock.json .npmrc ./
COPY scripts/docker-steps.sh ./scripts/
RUN --mount=type=cache,target=/root/.npm bash scripts/docker-steps.sh install_build_deps
COPY . .
RUN bash scripts/docker-steps.sh build_app

# ---- model: download the CLIP export (or use the bundled demo model) -------------------------
FROM build AS model
ARG MODEL=Xenova/clip-vit-base-patch32
ARG MODEL_REVISION=
ARG MODEL_VARIANT=
# a Hub mirror, if any (empty: huggingface.co)
ARG HF_ENDPOINT=
RUN bash scripts/docker-steps.sh fetch_model "$MODEL" "$MODEL_REVISION" "$MODEL_VARIANT"

# ---- runtime: production dependencies, the build output and the model ------------------------
FROM node:20-bookworm-slim AS runtime
# tini as PID 1 forwards SIGTERM to node (the worker's graceful shutdown) and reaps zombies;
# a fixed numeric user so that Kubernetes' runAsNonRoot can verify it
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 clipguard \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin clipguard
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY scripts/docker-steps.sh ./scripts/
RUN --mount=type=cache,target=/root/.npm bash scripts/docker-steps.sh install_runtime_deps
COPY examples ./examples
COPY --from=build /app/dist/src ./dist/src
COPY --from=model /app/models ./models
RUN bash scripts/docker-steps.sh finish_runtime

ARG MODEL=Xenova/clip-vit-base-patch32
ARG MODEL_VARIANT=
ENV CLIPGUARD_MODEL_DIR=/app/models/${MODEL} \
    CLIPGUARD_MODEL_VARIANT=${MODEL_VARIANT}

USER 10001:10001
# 9464: the worker's /metrics, /healthz, /readyz; 8080: `clipguard api`
EXPOSE 9464 8080
# whichever of the two servers this container runs must answer /healthz (no curl in slim images)
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "const e=process.env;Promise.any([e.CLIPGUARD_METRICS_PORT||9464,e.CLIPGUARD_API_PORT||8080].map(p=>fetch('http://127.0.0.1:'+p+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>r.ok||Promise.reject(r.status)))).then(()=>process.exit(0),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "clipguard"]
CMD ["worker"]
