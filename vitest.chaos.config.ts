import { defineConfig } from "vitest/config";
import ReliabilityReporter from "./chaos/support/reliability-reporter.js";

// the chaos suite (npm run test:chaos / test:chaos:quick): scenarios run one after another,
// because each loads the machine on purpose and measures how the service copes
export default defineConfig({
  test: {
    include: ["chaos/**/*.chaos.ts"],
    testTimeout: 40 * 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    maxWorkers: 1,
    reporters: ["default", new ReliabilityReporter()],
  },
});
