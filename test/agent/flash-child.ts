// Child process for the flash kill -9 tests: runs a device's JobAgent and kills itself with
// SIGKILL (no cleanup) right after the state naming `killAt` is on disk; with `none`, runs until
// the job ends and prints its final state.
import { JobAgent } from '../../src/agent/jobs.js';
import { FINAL_JOB_STATES } from '../../src/agent/job-protocol.js';

const [brokerUrl, root, trustDir, device, killAt] = process.argv.slice(2);
if (!brokerUrl || !root || !trustDir || !device || !killAt) throw new Error('usage: flash-child <broker> <root> <trust-dir> <device> <step|none>');
const agent = new JobAgent({
  brokerUrl,
  root,
  trustDir,
  fleet: 'lab',
  device,
  trial: { durationMs: 300 },
  download: { requestTimeoutMs: 1_000 },
  onLog: (l) => process.stderr.write(l + '\n'),
  onState: async (r) => {
    process.stdout.write(`state ${r.state} ${r.step} ${r.progress.toFixed(2)}\n`);
    // Download: once some blocks are on disk, so the restart has something to resume.
    if (r.state === 'in-progress' && r.step === killAt && (killAt !== 'download' || r.progress > 0.05)) process.kill(process.pid, 'SIGKILL');
    if (FINAL_JOB_STATES.includes(r.state)) {
      setTimeout(() => {
        void agent.idle().then(async () => {
          await agent.close();
          process.stdout.write(`final ${r.state} ${r.attempts} ${r.reason ?? ''}\n`);
          process.exit(0);
        });
      }, 0);
    }
  },
});
await agent.start();
