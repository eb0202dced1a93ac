import fs from "node:fs";
import path from "node:path";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { parseAllDocuments } from "yaml";

/** A manifest as parsed from YAML, before its schema is checked. */
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** The models (with their JSON schemas) of every kind the manifests may use. */
export const MODELS = {
  "v1/Namespace": Namespace,
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
} as const;

const CLUSTER_SCOPED = new Set(["Namespace"]);

/** Every document of a YAML file, as plain values; YAML errors and warnings throw with the file name. */
export function readYaml(file: string): unknown[] {
  const docs = parseAllDocuments(fs.readFileSync(file, "utf8"), { prettyErrors: true });
  if (!Array.isArray(docs)) throw new Error(`${file}: not a YAML stream`);
  return docs.map((doc) => {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length > 0) throw new Error(`${file}: ${problems.map((e) => e.message).join("; ")}`);
    return doc.toJS() as unknown;
  });
}

/** Every document of a manifest file, each a Kubernetes object with a kind and a name. */
export function readManifests(file: string): Manifest[] {
  return readYaml(file).map((value, i) => {
    const m = value as Partial<Manifest> | null;
    if (m === null || typeof m.kind !== "string" || typeof m.metadata?.name !== "string") {
      throw new Error(`${file}: document ${i + 1} is not a Kubernetes object with a kind and a name`);
    }
    return m as Manifest;
  });
}

/** Throws with every schema problem of a manifest, or when no schema is known for its kind. */
export function validateManifest(m: Manifest): void {
  const key = `${m.apiVersion}/${m.kind}` as keyof typeof MODELS;
  const Model = MODELS[key];
  if (Model === undefined) throw new Error(`${m.kind} ${m.metadata.name}: no schema for ${m.apiVersion}/${m.kind}`);
  new Model(m as never).validate();
}

interface Kustomization {
  namespace?: string;
  resources?: string[];
  configMapGenerator?: { name: string; files?: string[]; literals?: string[]; options?: { disableNameSuffixHash?: boolean } }[];
  images?: { name: string; newName?: string; newTag?: string }[];
  [field: string]: unknown;
}

const SUPPORTED = new Set(["apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images"]);

/**
 * What `kustomize build DIR` produces for the subset of kustomize this repository uses (resources,
 * namespace, configMapGenerator without name hashes, images); any other field is an error, so
 * the resolution cannot silently fall behind the kustomization.
 */
export function resolveKustomization(dir: string): { kustomization: Kustomization; resources: Manifest[] } {
  const [kustomization] = readYaml(path.join(dir, "kustomization.yaml")) as Kustomization[];
  if (kustomization === undefined) throw new Error("empty kustomization.yaml");
  const unsupported = Object.keys(kustomization).filter((k) => !SUPPORTED.has(k));
  if (unsupported.length > 0) throw new Error(`kustomization fields not resolved by the test: ${unsupported.join(", ")}`);
  const resources = (kustomization.resources ?? []).flatMap((file) => readManifests(path.join(dir, file)));
  for (const gen of kustomization.configMapGenerator ?? []) {
    if (gen.options?.disableNameSuffixHash !== true) throw new Error(`configMapGenerator ${gen.name}: name hashes are not resolved by the test`);
    const data: Record<string, string> = {};
    for (const file of gen.files ?? []) data[path.basename(file)] = fs.readFileSync(path.join(dir, file), "utf8");
    for (const literal of gen.literals ?? []) {
      const [k = "", ...v] = literal.split("=");
      data[k] = v.join("=");
    }
    resources.push({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: gen.name }, data });
  }
  for (const r of resources) {
    if (kustomization.namespace !== undefined && !CLUSTER_SCOPED.has(r.kind)) r.metadata.namespace = kustomization.namespace;
    for (const c of podSpec(r)?.containers ?? []) {
      const [name = "", tag] = c.image.split(":");
      const rule = kustomization.images?.find((i) => i.name === name);
      if (rule !== undefined) c.image = `${rule.newName ?? name}:${rule.newTag ?? tag ?? ""}`;
    }
  }
  return { kustomization, resources };
}

/** The parts of a pod spec the cross-checks read (the schema has checked the rest). */
export interface PodSpecView {
  containers: {
    name: string;
    image: string;
    args?: string[];
    ports?: { name?: string; containerPort: number }[];
    env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean }; resourceFieldRef?: { resource: string; divisor?: string } } }[];
    volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
    [field: string]: unknown;
  }[];
  volumes?: { name: string; configMap?: { name: string }; emptyDir?: object }[];
  [field: string]: unknown;
}

export function podSpec(m: Manifest): PodSpecView | undefined {
  if (m.kind !== "Deployment") return undefined;
  return (m as unknown as { spec: { template: { spec: PodSpecView } } }).spec.template.spec;
}

/** Pod labels of a Deployment's template. */
export function podLabels(m: Manifest): Record<string, string> {
  return (m as unknown as { spec: { template: { metadata: { labels: Record<string, string> } } } }).spec.template.metadata.labels;
}

/** True when every label of the selector is set on the object. */
export function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (selector === undefined || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}
