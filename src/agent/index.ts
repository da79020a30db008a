// Public surface of the device agent: the loop that classifies images as they appear in a folder
// and feeds every prediction to device telemetry.
export { runAgentLoop, type AgentLoopOptions, type AgentStats } from './loop.js';
export { downloadBundle, DownloadError, type DownloadOptions, type DownloadProgress, type DownloadStats, type FileRef } from './download.js';
export { FILES_ROOT, FILE_SERVER_GROUP, MAX_CHUNK_BYTES, fileRequestTopic, fileReplyTopic, fileServerSubscription, type FileRequest, type FileReplyStatus } from './file-protocol.js';
