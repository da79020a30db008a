// `edgeexit devices`: list the device profiles, show one, validate a profile file, print the schema.
import { listDeviceProfiles, loadDeviceProfile, deviceProfileJsonSchemaText } from '../../devices/index.js';
import type { DeviceProfile } from '../../devices/index.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { table } from '../format.js';

export interface DevicesOptions {
  show?: string;
  validate?: string[];
  schema?: boolean;
  json?: boolean;
}

export async function devicesCommand(opts: DevicesOptions, io: CliIO): Promise<void> {
  if (opts.schema) {
    io.out(deviceProfileJsonSchemaText());
    return;
  }
  if (opts.validate && opts.validate.length > 0) {
    // Validate every file before failing, so one run reports all broken profiles.
    const errors: string[] = [];
    for (const f of opts.validate) {
      try {
        const p = await loadDeviceProfile(f);
        io.out(`ok  ${f} (${p.id})`);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    if (errors.length > 0) {
      const { InputError } = await import('../../util/errors.js');
      throw new InputError(errors.join('\n'));
    }
    return;
  }
  if (opts.show) {
    const p = await loadDeviceProfile(opts.show);
    io.out(JSON.stringify(p, null, 2));
    return;
  }
  const ids = await listDeviceProfiles();
  const profiles: DeviceProfile[] = [];
  for (const id of ids) profiles.push(await loadDeviceProfile(id));
  if (opts.json) {
    io.out(JSON.stringify(profiles, null, 2));
    return;
  }
  io.out(
    table(
      ['id', 'cpu', 'isa', 'providers', 'precision', 'scheme', 'power W (idle/busy)', 'energy sensor'],
      profiles.map((p) => [
        p.id,
        `${p.cpu.cores}x ${short(p.cpu.model, 22)}`,
        isaFlags(p),
        p.executionProviders.join(','),
        p.precision.default,
        p.precision.quantScheme,
        `${p.power.idleWatts}/${p.power.busyWatts}`,
        p.energySensor.kind,
      ]),
    ),
  );
  io.out(`\n${profiles.length} profiles in devices/. Details: edgeexit devices --show <id>. Schema: edgeexit devices --schema.`);
}

const short = (s: string, n: number): string => (s.length > n ? s.slice(0, n - 1) + '…' : s);

function isaFlags(p: DeviceProfile): string {
  const isa = p.cpu.isa;
  const flags = [isa.neonDotProd && 'dotprod', isa.fp16Arith && 'fp16', isa.avx2 && 'avx2', isa.avx512 && 'avx512', isa.vnni && 'vnni'].filter(Boolean);
  return flags.length ? flags.join(',') : '-';
}

export function devicesModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('show', { type: 'string', describe: 'Print one profile (id or path) with defaults filled in' })
        .option('validate', { type: 'string', array: true, describe: 'Validate profile files; reports every problem of every file' })
        .option('schema', { type: 'boolean', describe: 'Print the JSON Schema generated from the zod schema' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 devices', 'table of all profiles')
        .example('$0 devices --validate my-board.json', 'check a new profile before using it'),
    handler: (args: DevicesOptions) => devicesCommand(args, io),
  });
}
