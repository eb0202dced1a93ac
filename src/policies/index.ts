/** The policies module: YAML → validated PolicySet → CompiledPolicySet → judgements. */
export {
  compilePolicies,
  type CompiledPolicy,
  type CompiledPolicySet,
  type CompileOptions,
  type CompileStats,
  type Judgement,
  type PolicyJudgement,
} from "./compiled-policies.js";
export { loadPolicyFile, parsePolicies } from "./policy-file.js";
export { formatProblem, PolicyValidationError, type PolicyProblem } from "./policy-problems.js";
export {
  DEFAULT_LOGIT_SCALE,
  DEFAULT_SCORING,
  POLICY_LIMITS,
  policyFileSchema,
  SCORING_MODES,
  type PolicyFileSpec,
  type PolicySpec,
  type ScoringMode,
} from "./policy-schema.js";
export {
  policyVersion,
  type Policy,
  type PolicyDefaults,
  type PolicySet,
  type PolicyThresholds,
} from "./policy-set.js";
export {
  closestIndex,
  contrastiveScore,
  decide,
  dot,
  ensemble,
  l2normalize,
  mostSevere,
  similarityScore,
  softmax,
  type Decision,
} from "./scoring.js";
export {
  MemoryTextEmbeddingCache,
  type MemoryTextEmbeddingCacheOptions,
  type TextEmbeddingCache,
} from "./text-embedding-cache.js";
