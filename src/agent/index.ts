// Public surface of the device agent: the loop that classifies images as they appear in a folder
// and feeds every prediction to device telemetry.
export { runAgentLoop, type AgentLoopOptions, type AgentStats } from './loop.js';
