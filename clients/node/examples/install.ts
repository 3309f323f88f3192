/**
 * Upload a skill folder (packed deterministically) or archive, follow its install
 * stage by stage, exit non-zero on failure.
 *
 *     node dist/examples/install.js FOLDER|ARCHIVE --skill ID [--version V] [--create]
 *                                   [--no-activate] [--address HOST:PORT]
 *
 * SKILLSVC_ADDR and SKILLSVC_TOKEN are read when the flags are absent. Exit codes:
 * 0 installed, 1 the install failed (or the server refused it), 2 usage.
 */

import { parseArgs } from "node:util";

import { NotFoundError, SkillsvcClient, SkillsvcError, type InstallEvent } from "../src/index";

const USAGE =
  "usage: install FOLDER|ARCHIVE --skill ID [--version V] [--create] [--no-activate]" +
  " [--address HOST:PORT]";

function stageName(event: InstallEvent): string {
  return event.stage.replace("INSTALL_STAGE_", "");
}

function printEvent(event: InstallEvent): void {
  const bytes = event.bytes_total > 0 ? ` ${event.bytes_done}/${event.bytes_total} bytes` : "";
  const message = event.message ? ` ${event.message}` : "";
  console.log(`${stageName(event)}${bytes}${message}`);
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        skill: { type: "string" },
        version: { type: "string" },
        address: { type: "string" },
        create: { type: "boolean", default: false },
        "no-activate": { type: "boolean", default: false },
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [source] = positionals;
  if (source === undefined || positionals.length !== 1 || values.skill === undefined) {
    console.error(USAGE);
    return 2;
  }
  const token = process.env["SKILLSVC_TOKEN"];
  const client = new SkillsvcClient({
    address: values.address ?? process.env["SKILLSVC_ADDR"] ?? "127.0.0.1:50051",
    ...(token ? { token } : {}),
  });
  try {
    if (values.create) {
      try {
        await client.getDefinition(values.skill);
      } catch (error) {
        if (!(error instanceof NotFoundError)) {
          throw error;
        }
        await client.createDefinition({ skill_id: values.skill });
        console.log(`created skill ${values.skill}`);
      }
    }
    const operation = await client.install(values.skill, source, {
      ...(values.version ? { version: values.version } : {}),
      ...(values["no-activate"] ? { activate: false } : {}),
    });
    console.log(`operation ${operation.operation_id}`);
    const done = await client.wait(operation.operation_id, printEvent);
    const { version } = await client.getOperation(operation.operation_id);
    const pkg = await client.getPackage(values.skill, version);
    console.log(`installed ${values.skill} ${pkg.version} sha256 ${pkg.sha256} (${done.message})`);
    return 0;
  } catch (error) {
    if (error instanceof SkillsvcError) {
      console.error(`install failed: ${error.describe()}`);
      return 1;
    }
    if (error instanceof Error && "code" in error && typeof error.code === "string") {
      console.error(`install failed: ${error.message}`); // e.g. ENOENT for the source
      return 1;
    }
    throw error;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
