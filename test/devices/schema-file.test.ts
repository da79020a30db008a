// The committed devices/device-profile.schema.json must be exactly what the zod schema
// generates, so editors never validate against a stale copy.
// Regenerate: EDGEEXIT_UPDATE_SCHEMA=1 npx vitest run test/devices/schema-file.test.ts
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEVICE_SCHEMA_FILE, deviceProfileJsonSchema, deviceProfileJsonSchemaText, devicesDir, writeDeviceProfileJsonSchema } from '../../src/devices/index.js';

describe('devices/device-profile.schema.json', () => {
  it('equals the schema the code generates', async () => {
    const file = path.join(devicesDir(), DEVICE_SCHEMA_FILE);
    if (process.env.EDGEEXIT_UPDATE_SCHEMA === '1') await writeDeviceProfileJsonSchema(file);
    const committed = readFileSync(file, 'utf8');
    expect(committed, 'stale schema file: run EDGEEXIT_UPDATE_SCHEMA=1 npx vitest run test/devices/schema-file.test.ts').toBe(deviceProfileJsonSchemaText());
  });

  it('documents every property and lists the registry values', () => {
    const schema = deviceProfileJsonSchema() as { properties: Record<string, { description?: string }> };
    for (const [key, prop] of Object.entries(schema.properties)) expect(prop.description, key).toBeTruthy();
    const text = deviceProfileJsonSchemaText();
    for (const ep of ['cpu', 'cuda', 'tensorrt', 'xnnpack', 'webgpu']) expect(text).toContain(`"${ep}"`);
    for (const q of ['s8s8-qdq', 'u8s8-reduce-range-qdq', 'u8s8-qdq', 'symmetric-s8-qdq']) expect(text).toContain(`"${q}"`);
  });
});
