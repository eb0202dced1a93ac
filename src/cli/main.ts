#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { registerApiCommand } from "./api-command.js";
import { EXIT, reportFatal } from "./cli-errors.js";
import { registerDemoCommand } from "./demo-command.js";
import { registerEnqueueCommand } from "./enqueue-command.js";
import { registerModelCommand } from "./model-command.js";
import { registerEvalCommand } from "./eval-command.js";
import { registerPoliciesCommand } from "./policies-command.js";
import { registerRescoreCommand } from "./rescore-command.js";
import { registerScoreCommand } from "./score-command.js";
import { registerVerdictsCommand } from "./verdicts-command.js";
import { registerWorkerCommand } from "./worker-command.js";

const program = new Command()
  .name("clipguard")
  .description("Content moderation with CLIP: score images against plain-English policies")
  .version("0.1.0")
  .exitOverride()
  .showHelpAfterError("(run with --help for usage)");

registerScoreCommand(program);
registerPoliciesCommand(program);
registerEvalCommand(program);
registerWorkerCommand(program);
registerEnqueueCommand(program);
registerVerdictsCommand(program);
registerApiCommand(program);
registerModelCommand(program);
registerRescoreCommand(program);
registerDemoCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // help and version exit 0; every other parse failure is a usage error (commander printed it)
    process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else {
    process.exitCode = reportFatal(err);
  }
}
