// Public surface of the device agent: the loop that classifies images as they appear in a folder
// and feeds every prediction to device telemetry; the bundle store, installs with self-test and
// rollback, and the runner the agent swaps in place after an install.
export { runAgentLoop, type AgentLoopOptions, type AgentStats } from './loop.js';
export { BundleStore, bundleId, defaultStoreRoot, STORE_ROOT_ENV, INSTALL_STATES, FINAL_STATES, type InstallState, type JournalEntry } from './store.js';
export { installBundle, recoverStore, recoverIfIdle, checkCompatibility, compareVersions, DEFAULT_KEEP, type InstallOptions, type InstallResult, type TrialContext } from './install.js';
export { selfTestBundle, type SelfTestOptions, type SelfTestResult, type SelfTestStage } from './selftest.js';
export { SwappableRunner } from './swappable.js';
export { downloadBundle, DownloadError, type DownloadOptions, type DownloadProgress, type DownloadStats, type FileRef } from './download.js';
export { FILES_ROOT, FILE_SERVER_GROUP, MAX_CHUNK_BYTES, fileRequestTopic, fileReplyTopic, fileServerSubscription, type FileRequest, type FileReplyStatus } from './file-protocol.js';
export { DiskFullError, SPACE_MARGIN_BYTES, diskFullDuringWrite, ensureFreeSpace, freeBytes, isDiskFull, spaceShortfall } from './space.js';
export {
  JOB_STATES,
  JOB_STEPS,
  FINAL_JOB_STATES,
  MAX_JOB_MESSAGE_BYTES,
  JobSchema,
  SignedJobSchema,
  JobStateSchema,
  jobTopics,
  jobFilters,
  signJob,
  checkSignedJob,
  decodeJobState,
  peekJob,
  type Job,
  type JobState,
  type JobStep,
  type JobStateReport,
  type SignedJob,
  type JobCheck,
} from './job-protocol.js';
export { JobAgent, JOB_RECORD_FILE, DEFAULT_MAX_ATTEMPTS, type JobAgentOptions } from './jobs.js';
export { LatencyWatch, type TrialPolicy, type TrialVerdict } from './trial.js';
export { type ClassifyObservation } from './swappable.js';
