// The command table: adding a command is adding a line here.
import type { CommandModule } from 'yargs';
import type { CliIO } from '../io.js';
import { devicesModule } from './devices.js';
import { evalModule } from './evaluate.js';
import { inspectModule } from './inspect.js';
import { modelsModule } from './models.js';
import { quickstartModule } from './quickstart.js';

export function commands(io: CliIO): CommandModule<object, never>[] {
  return [quickstartModule(io), modelsModule(io), devicesModule(io), inspectModule(io), evalModule(io)] as unknown as CommandModule<object, never>[];
}
