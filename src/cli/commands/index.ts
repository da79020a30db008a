// The command table: adding a command is adding a line here.
import type { CommandModule } from 'yargs';
import type { CliIO } from '../io.js';
import { agentModule } from './agent.js';
import { calibrateModule } from './calibrate.js';
import { collectModule } from './collect.js';
import { compileModule } from './compile.js';
import { devicesModule } from './devices.js';
import { evalModule } from './evaluate.js';
import { fleetModule } from './fleet.js';
import { inspectModule } from './inspect.js';
import { keygenModule } from './keygen.js';
import { modelsModule } from './models.js';
import { packModule } from './pack.js';
import { profileModule } from './profile.js';
import { quickstartModule } from './quickstart.js';
import { runModule } from './run.js';
import { simulateModule } from './simulate.js';
import { verifyBundleModule } from './verify-bundle.js';

export function commands(io: CliIO): CommandModule<object, never>[] {
  return [
    quickstartModule(io),
    modelsModule(io),
    devicesModule(io),
    inspectModule(io),
    evalModule(io),
    compileModule(io),
    keygenModule(io),
    verifyBundleModule(io),
    packModule(io),
    runModule(io),
    agentModule(io),
    profileModule(io),
    calibrateModule(io),
    collectModule(io),
    fleetModule(io),
    simulateModule(io),
  ] as unknown as CommandModule<object, never>[];
}
