#!/usr/bin/env node
// The published entry point: the agent is TypeScript run through tsx (no build step to forget).
import { register } from 'tsx/esm/api';

register();
await import('../main.ts');
