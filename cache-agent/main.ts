#!/usr/bin/env node
/** lora-cache — skeleton entry point; the agent is built by the cache-agent issue. */
process.stderr.write('lora-cache: not implemented yet (see cache-agent/README.md)\n');
process.exitCode = 1;
