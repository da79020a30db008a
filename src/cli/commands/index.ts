// The command table: adding a command is adding a row here. Only the command being run is
// imported (its module pulls in what it needs: the compiler, the collector, SQLite…), so
// `edgeexit run` on a device loads no compiler, store or broker code; `--help` needs only this table.
import type { CliIO } from '../io.js';
import type { AnyCommandBody } from '../command.js';

export interface CommandEntry {
  /** The first word, as typed. */
  name: string;
  /** yargs command string with positionals. */
  command: string;
  describe: string;
  load: (io: CliIO) => Promise<AnyCommandBody>;
}

export const COMMANDS: readonly CommandEntry[] = [
  {
    name: 'quickstart',
    command: 'quickstart',
    describe: 'The main job end to end on the embedded defaults: profiles, zoo inspection and evaluation against the model cards',
    load: async (io) => (await import('./quickstart.js')).quickstartModule(io),
  },
  {
    name: 'models',
    command: 'models',
    describe: 'List the reference zoo (models/): exits, MACs per exit and recorded test accuracy',
    load: async (io) => (await import('./models.js')).modelsModule(io),
  },
  {
    name: 'devices',
    command: 'devices',
    describe: 'List the target device profiles (devices/*.json), show or validate one, print the JSON Schema',
    load: async (io) => (await import('./devices.js')).devicesModule(io),
  },
  {
    name: 'inspect',
    command: 'inspect <model>',
    describe: 'Show a model: input, exits (graph outputs), opsets, op histogram, parameters and MACs per exit',
    load: async (io) => (await import('./inspect.js')).inspectModule(io),
  },
  {
    name: 'eval',
    command: 'eval <model>',
    describe: 'Per-exit top-1 accuracy and oracle exit distribution on Fashion-MNIST (IDX) or an ImageFolder',
    load: async (io) => (await import('./evaluate.js')).evalModule(io),
  },
  {
    name: 'compile',
    command: 'compile <model>',
    describe: 'Compile a float multi-exit ONNX model (or a CBNet folder) into a bundle of stages (manifest, hashes, optional signature)',
    load: async (io) => (await import('./compile.js')).compileModule(io),
  },
  {
    name: 'keygen',
    command: 'keygen',
    describe: 'Make an ed25519 key pair for signing bundles: <prefix>.key (private) and <prefix>.pub',
    load: async (io) => (await import('./keygen.js')).keygenModule(io),
  },
  {
    name: 'trust',
    command: 'trust',
    describe: "Manage this device's trust store of bundle-signing keys: add, list, revoke",
    load: async (io) => (await import('./trust.js')).trustModule(io),
  },
  {
    name: 'verify-bundle',
    command: 'verify-bundle <bundle>',
    describe: 'Check a bundle folder or archive: every file against the manifest hashes, and the signature',
    load: async (io) => (await import('./verify-bundle.js')).verifyBundleModule(io),
  },
  {
    name: 'pack',
    command: 'pack <bundle>',
    describe: 'Pack a bundle folder into one tar archive (verify-bundle accepts it too)',
    load: async (io) => (await import('./pack.js')).packModule(io),
  },
  {
    name: 'run',
    command: 'run <bundle> <inputs..>',
    describe: 'Classify images with a bundle through its early exits (verifies hashes and signature first)',
    load: async (io) => (await import('./run.js')).runModule(io),
  },
  {
    name: 'agent',
    command: 'agent [bundle]',
    describe: 'Device agent: classify images as they appear in a folder and publish telemetry until stopped',
    load: async (io) => (await import('./agent.js')).agentModule(io),
  },
  {
    name: 'profile',
    command: 'profile <bundle>',
    describe: 'Per-stage latency of a bundle (measured here, or a device cost-model estimate) as a table and a profile file for calibrate',
    load: async (io) => (await import('./profile.js')).profileModule(io),
  },
  {
    name: 'calibrate',
    command: 'calibrate <bundle>',
    describe: "Fit temperatures and exit thresholds to a latency target on labelled images, check them on held-out images, write them into the bundle's manifest",
    load: async (io) => (await import('./calibrate.js')).calibrateModule(io),
  },
  {
    name: 'install',
    command: 'install <bundle>',
    describe: "Install a bundle into this device's store: verify, check it suits the device, self-test on golden I/O, switch atomically, keep the previous for rollback",
    load: async (io) => (await import('./install.js')).installModule(io),
  },
  {
    name: 'flash',
    command: 'flash <bundle>',
    describe: 'Flash a signed bundle to devices: publish a signed job per device (--to, --group), files served by hash; --wait for the verdicts',
    load: async (io) => (await import('./flash.js')).flashModule(io),
  },
  {
    name: 'jobs',
    command: 'jobs',
    describe: 'Flash jobs per device (state, step, progress, reason) from the broker; `jobs cancel <id>`',
    load: async (io) => (await import('./flash.js')).jobsModule(io),
  },
  {
    name: 'rollout',
    command: 'rollout',
    describe: 'Roll a bundle out to a fleet: canary per hardware class, gated waves, abort and roll back; `rollout status|pause|resume|abort|drive`',
    load: async (io) => (await import('./rollout.js')).rolloutModule(io),
  },
  {
    name: 'recalibrate',
    command: 'recalibrate',
    describe: "Calibrate a bundle against what one hardware class of a fleet measured, sign the thresholds-only update and roll it out to that class (only the manifest moves)",
    load: async (io) => (await import('./recalibrate.js')).recalibrateModule(io),
  },
  {
    name: 'collect',
    command: 'collect',
    describe: 'Collect device telemetry from MQTT into a fleet database (embedded broker unless --broker)',
    load: async (io) => (await import('./collect.js')).collectModule(io),
  },
  {
    name: 'fleet',
    command: 'fleet',
    describe: 'Fleet telemetry recorded by `edgeexit collect` (status), and broker credentials: broker-config, enroll, revoke',
    load: async (io) => (await import('./fleet.js')).fleetModule(io),
  },
  {
    name: 'simulate',
    command: 'simulate',
    describe: 'Simulate a fleet of devices publishing telemetry (embedded broker and collector unless --broker)',
    load: async (io) => (await import('./simulate.js')).simulateModule(io),
  },
];
