/**
 * The chaos suite's two sizes: `full` (`npm run test:chaos`, the figures in docs/reliability.md)
 * and `quick` (`npm run test:chaos:quick`, run by CI, same scenarios with smaller counts).
 */
export type ChaosProfile = "quick" | "full";

export const PROFILE: ChaosProfile = process.env["CHAOS_PROFILE"] === "quick" ? "quick" : "full";

/** The value for the running profile, e.g. `sized({ quick: 200, full: 1000 })`. */
export function sized<T>(values: Record<ChaosProfile, T>): T {
  return values[PROFILE];
}
