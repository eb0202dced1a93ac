import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { Service } from "kubernetes-models/v1/Service";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { parsePolicies } from "../src/policies/index.js";
import { CONFIG_VARIABLES, loadConfig } from "../src/shared/config.js";
import { podLabels, podSpec, readManifests, resolveKustomization, selects, validateManifest, type Manifest } from "./support/k8s-manifests.js";

const DIR = "deploy/k8s";
const { kustomization, resources } = resolveKustomization(DIR);
const allFiles = fs.readdirSync(DIR, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".yaml")).sort();
const byKind = (kind: string) => resources.filter((r) => r.kind === kind);
const one = (kind: string, name: string): Manifest => {
  const found = resources.find((r) => r.kind === kind && r.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name}`);
  return found;
};
const [exampleSecret] = readManifests(path.join(DIR, "secret.example.yaml"));
const secretData = (exampleSecret as unknown as { stringData: Record<string, string> }).stringData;
const deployments = byKind("Deployment");
const worker = one("Deployment", "clipguard-worker");
const api = one("Deployment", "clipguard-api");
const container = (d: Manifest) => {
  const c = podSpec(d)?.containers[0];
  if (c === undefined) throw new Error(`${d.metadata.name} has no container`);
  return c;
};
const literalEnv = (d: Manifest): Record<string, string> =>
  Object.fromEntries((container(d).env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value ?? ""]));
type Probe = { httpGet?: { path: string; port: string | number } } | undefined;
const probe = (d: Manifest, kind: "startupProbe" | "livenessProbe" | "readinessProbe") => container(d)[kind] as Probe;
const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" }).status === 0;

describe("deploy/k8s manifests", () => {
  it("lists only files that exist, and every manifest beside it except the example Secret and the fallback HPA", () => {
    const listed = kustomization.resources ?? [];
    for (const file of listed) expect(fs.existsSync(path.join(DIR, file)), file).toBe(true);
    const generated = (kustomization.configMapGenerator ?? []).flatMap((g) => g.files ?? []);
    expect([...listed, ...generated, "kustomization.yaml", "secret.example.yaml", "fallback/hpa-cpu.yaml"].sort()).toEqual(allFiles);
  });

  it("validates every manifest against the Kubernetes, KEDA and Prometheus Operator schemas", () => {
    const problems: string[] = [];
    for (const file of allFiles.filter((f) => f !== "kustomization.yaml" && f !== "policies.yaml")) {
      for (const m of readManifests(path.join(DIR, file))) {
        try {
          validateManifest(m);
        } catch (err) {
          problems.push(`${file}: ${m.kind} ${m.metadata.name}: ${(err as Error).message}`);
        }
      }
    }
    for (const m of resources) {
      try {
        validateManifest(m); // the generated ConfigMap too
      } catch (err) {
        problems.push(`built ${m.kind} ${m.metadata.name}: ${(err as Error).message}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it.skipIf(!kubectl)("builds with `kubectl kustomize` to exactly the objects this test resolves", () => {
    const out = spawnSync("kubectl", ["kustomize", DIR], { encoding: "utf8" });
    expect(out.status, out.stderr).toBe(0);
    const key = (m: Manifest) => `${m.kind}/${m.metadata.namespace ?? ""}/${m.metadata.name}`;
    const built = parseAllDocuments(out.stdout).map((d) => d.toJS() as Manifest);
    expect(Object.fromEntries(built.map((m) => [key(m), m]))).toEqual(Object.fromEntries(resources.map((m) => [key(m), m])));
  });

  it("pins the image (no latest) and names no Secret values", () => {
    for (const d of deployments) expect(container(d).image).toMatch(/^[^:]+:(?!latest$)[\w.-]+$/);
    expect(byKind("Secret")).toEqual([]);
  });

  it("sets only variables that clipguard reads, with values that its config accepts", () => {
    for (const d of deployments) {
      const names = (container(d).env ?? []).map((e) => e.name);
      expect(names.filter((n) => !CONFIG_VARIABLES.includes(n)), d.metadata.name).toEqual([]);
      const env: Record<string, string> = { ...literalEnv(d) };
      for (const e of container(d).env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref !== undefined) env[e.name] = secretData[ref.key] ?? "";
        if (e.valueFrom?.resourceFieldRef?.resource === "limits.cpu") env[e.name] = "2";
      }
      expect(() => loadConfig(env), d.metadata.name).not.toThrow();
    }
  });

  it("references only Secret keys that the example Secret has", () => {
    const refs = deployments.flatMap((d) => (container(d).env ?? []).flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef] : [])));
    for (const ta of byKind("TriggerAuthentication")) refs.push(...(new TriggerAuthentication(ta as never).spec?.secretTargetRef ?? []));
    expect(refs.length).toBeGreaterThan(4);
    for (const ref of refs) {
      expect(ref.name).toBe(exampleSecret?.metadata.name);
      expect(Object.keys(secretData), ref.key).toContain(ref.key);
    }
    expect(exampleSecret?.metadata.namespace).toBe(kustomization.namespace);
    expect(() => new Webhook(secretData["CLIPGUARD_WEBHOOK_SECRET"] ?? "")).not.toThrow();
    const url = new URL(secretData["REDIS_URL"] ?? "");
    expect(secretData["REDIS_ADDRESS"]).toBe(`${url.hostname}:${url.port}`);
    expect(secretData["REDIS_PASSWORD"]).toBe(decodeURIComponent(url.password));
  });

  it("mounts the policies ConfigMap as a directory (hot reload) at CLIPGUARD_POLICIES, with valid policies", () => {
    const file = literalEnv(worker)["CLIPGUARD_POLICIES"] ?? "";
    const volumeName = podSpec(worker)?.volumes?.find((v) => v.configMap !== undefined)?.name;
    const mount = container(worker).volumeMounts?.find((m) => m.name === volumeName);
    expect(mount?.subPath, "a subPath mount never sees ConfigMap updates").toBeUndefined();
    expect(path.posix.dirname(file)).toBe(mount?.mountPath);
    const configMapName = podSpec(worker)?.volumes?.find((v) => v.name === volumeName)?.configMap?.name ?? "";
    const data = (one("ConfigMap", configMapName) as unknown as { data: Record<string, string> }).data;
    const text = data[path.posix.basename(file)];
    expect(text, `key ${path.posix.basename(file)} in ConfigMap ${configMapName}`).toBeDefined();
    expect(parsePolicies(text ?? "", file).policies.length).toBeGreaterThan(0);
  });

  it("probes /healthz and /readyz on the port each server listens on", () => {
    const cases = [
      { d: worker, port: Number(literalEnv(worker)["CLIPGUARD_METRICS_PORT"]) },
      { d: api, port: Number(literalEnv(api)["CLIPGUARD_API_PORT"]) },
    ];
    for (const { d, port } of cases) {
      const ports = container(d).ports ?? [];
      expect(ports.map((p) => p.containerPort)).toEqual([port]);
      expect(probe(d, "livenessProbe")?.httpGet?.path).toBe("/healthz");
      expect(probe(d, "readinessProbe")?.httpGet?.path).toBe("/readyz");
      for (const kind of ["startupProbe", "livenessProbe", "readinessProbe"] as const) {
        const target = probe(d, kind)?.httpGet?.port;
        if (target !== undefined) expect(ports.find((p) => p.name === target || p.containerPort === target), `${d.metadata.name} ${kind}`).toBeDefined();
      }
    }
    expect(probe(worker, "startupProbe")?.httpGet?.path).toBe("/healthz");
  });

  it("gives in-flight jobs their grace period before SIGKILL", () => {
    const graceMs = Number(literalEnv(worker)["CLIPGUARD_SHUTDOWN_GRACE_MS"]);
    const spec = podSpec(worker) as { terminationGracePeriodSeconds?: number };
    expect(graceMs).toBeGreaterThan(0);
    expect(spec.terminationGracePeriodSeconds ?? 30).toBeGreaterThan(graceMs / 1000);
  });

  it("runs every pod non-root (the image's USER), read-only, without capabilities, under RuntimeDefault seccomp, with resources", () => {
    const user = /^USER (\d+):(\d+)$/m.exec(fs.readFileSync("Dockerfile", "utf8"));
    for (const d of deployments) {
      expect((podSpec(d) as { securityContext?: { runAsUser?: number; runAsGroup?: number } }).securityContext).toMatchObject({ runAsUser: Number(user?.[1]), runAsGroup: Number(user?.[2]) });
      const spec = podSpec(d) as { securityContext?: Record<string, unknown>; automountServiceAccountToken?: boolean };
      expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: "RuntimeDefault" } });
      expect(spec.automountServiceAccountToken).toBe(false);
      const c = container(d);
      expect(c["securityContext"]).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      expect(c.volumeMounts?.find((m) => m.mountPath === "/tmp")).toBeDefined();
      expect(c["resources"]).toMatchObject({ requests: { cpu: expect.any(String), memory: expect.any(String) }, limits: { cpu: expect.any(String), memory: expect.any(String) } });
    }
  });

  it("keeps Kubernetes' service links from injecting variables that clipguard reads", () => {
    // a Service `foo-bar` puts FOO_BAR_PORT, FOO_BAR_SERVICE_HOST, … into every pod of its namespace
    const injected = byKind("Service").flatMap((s) => {
      const prefix = s.metadata.name.toUpperCase().replace(/-/g, "_");
      const ports = new Service(s as never).spec?.ports ?? [];
      return [`${prefix}_SERVICE_HOST`, `${prefix}_SERVICE_PORT`, `${prefix}_PORT`, ...ports.map((p) => `${prefix}_PORT_${p.port}_${p.protocol ?? "TCP"}`)];
    });
    expect(injected.filter((n) => CONFIG_VARIABLES.includes(n))).not.toEqual([]); // clipguard-api → CLIPGUARD_API_PORT
    for (const d of deployments) expect((podSpec(d) as { enableServiceLinks?: boolean }).enableServiceLinks, d.metadata.name).toBe(false);
  });

  it("matches Services, PodDisruptionBudgets and NetworkPolicies to the pods they are for", () => {
    for (const s of byKind("Service")) {
      const svc = new Service(s as never);
      const targets = deployments.filter((d) => selects(svc.spec?.selector, podLabels(d)));
      expect(targets, s.metadata.name).toHaveLength(1);
      for (const p of svc.spec?.ports ?? []) {
        expect(container(targets[0] ?? worker).ports?.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort), `${s.metadata.name} → ${p.targetPort}`).toBe(true);
      }
    }
    expect(new Service(one("Service", "clipguard-api") as never).spec?.ports?.map((p) => p.port)).toEqual([8080]);
    for (const kind of ["PodDisruptionBudget", "NetworkPolicy"]) {
      for (const m of byKind(kind)) {
        const selector = kind === "NetworkPolicy" ? new NetworkPolicy(m as never).spec?.podSelector.matchLabels : new PodDisruptionBudget(m as never).spec?.selector?.matchLabels;
        expect(deployments.filter((d) => selects(selector, podLabels(d))).map((d) => d.metadata.name), `${kind} ${m.metadata.name}`).toEqual([m.metadata.name]);
      }
    }
  });

  it("lets the workers reach DNS, Redis and public addresses only, and only Prometheus reach them", () => {
    const policy = (name: string) => new NetworkPolicy(one("NetworkPolicy", name) as never).spec;
    const redisPort = Number(new URL(secretData["REDIS_URL"] ?? "").port);
    for (const name of ["clipguard-worker", "clipguard-api"]) {
      const spec = policy(name);
      expect(spec?.policyTypes).toEqual(["Ingress", "Egress"]);
      const egressPorts = (spec?.egress ?? []).flatMap((e) => (e.ports ?? []).map((p) => p.port));
      expect(egressPorts).toEqual(expect.arrayContaining([53, redisPort]));
      const ingressPorts = (spec?.ingress ?? []).flatMap((i) => (i.ports ?? []).map((p) => p.port));
      const d = one("Deployment", name);
      expect(ingressPorts.length).toBeGreaterThan(0);
      for (const port of ingressPorts) expect(container(d).ports?.some((p) => p.name === port || p.containerPort === port)).toBe(true);
    }
    expect(policy("clipguard-worker")?.ingress?.[0]?.from?.[0]?.namespaceSelector?.matchLabels).toEqual({ "kubernetes.io/metadata.name": "monitoring" });
    const internet = policy("clipguard-worker")?.egress?.flatMap((e) => e.to ?? []).filter((t) => t.ipBlock !== undefined) ?? [];
    expect(internet.find((t) => t.ipBlock?.cidr === "0.0.0.0/0")?.ipBlock?.except).toEqual(expect.arrayContaining(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]));
    expect(policy("clipguard-api")?.egress?.flatMap((e) => e.to ?? []).filter((t) => t.ipBlock !== undefined)).toEqual([]);
  });

  it("scrapes the workers' /metrics through a ServiceMonitor on the metrics Service", () => {
    const [sm, ...more] = byKind("ServiceMonitor").map((m) => new ServiceMonitor(m as never));
    expect(more).toEqual([]);
    const services = byKind("Service").filter((s) => selects(sm?.spec.selector.matchLabels, s.metadata.labels));
    expect(services).toHaveLength(1);
    expect(deployments.filter((d) => selects(new Service(services[0] as never).spec?.selector, podLabels(d)))).toEqual([worker]);
    // Prometheus Operator names the job after the Service (or its label named by jobLabel)
    const job = sm?.spec.jobLabel !== undefined ? services[0]?.metadata.labels?.[sm.spec.jobLabel] : services[0]?.metadata.name;
    const alerts = fs.readFileSync("deploy/prometheus/alerts.yaml", "utf8");
    expect(new Set([...alerts.matchAll(/\bjob="([^"]+)"/g)].map((m) => m[1]))).toEqual(new Set([job]));
    const ports = new Service(services[0] as never).spec?.ports ?? [];
    for (const e of sm?.spec.endpoints ?? []) {
      expect(e.path).toBe("/metrics");
      expect(ports.map((p) => p.name)).toContain(e.port);
    }
  });

  it("scales the workers with KEDA on BullMQ's waiting list, authenticated from the Secret", () => {
    const [so, ...more] = byKind("ScaledObject").map((m) => new ScaledObject(m as never));
    expect(more).toEqual([]);
    expect(so?.spec.scaleTargetRef.name).toBe(worker.metadata.name);
    const env = literalEnv(worker);
    for (const name of ["CLIPGUARD_QUEUE", "CLIPGUARD_PREFIX"]) expect(literalEnv(api)[name], `API and workers agree on ${name}`).toBe(env[name]);
    const [trigger] = so?.spec.triggers ?? [];
    expect(trigger?.type).toBe("redis");
    expect(trigger?.metadata["listName"]).toBe(`${env["CLIPGUARD_PREFIX"]}:${env["CLIPGUARD_QUEUE"]}:wait`);
    const auth = byKind("TriggerAuthentication").find((t) => t.metadata.name === trigger?.authenticationRef?.name);
    expect(auth).toBeDefined();
    expect(new TriggerAuthentication(auth as never).spec?.secretTargetRef?.map((r) => r.parameter).sort()).toEqual(["address", "password"]);
  });

  it("keeps the CPU HPA as a documented fallback outside the kustomization, aimed at the workers", () => {
    const [hpa] = readManifests(path.join(DIR, "fallback/hpa-cpu.yaml")).map((m) => new HorizontalPodAutoscaler(m as never));
    expect(hpa?.spec?.scaleTargetRef).toMatchObject({ kind: "Deployment", name: worker.metadata.name });
    expect(hpa?.metadata?.namespace).toBe(kustomization.namespace);
    expect(fs.readFileSync("README.md", "utf8")).toContain("deploy/k8s/fallback/hpa-cpu.yaml");
  });
});
