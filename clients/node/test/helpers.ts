/**
 * Test helpers: skill archives built in memory (a minimal ustar writer, so a test can
 * also write what `tar` would refuse to), and a real `skillsvc serve` child process.
 *
 * The server is the repository's `.venv/bin/skillsvc` (or SKILLSVC_BIN) on a free
 * loopback port, with SKILLSVC_NODE_TEST_DATABASE_URL (a fresh database) when given,
 * else the embedded PostgreSQL in a temporary data directory; it is stopped by its pid.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";

import { SkillsvcClient, UnavailableError } from "../src/index";

export const REPO_ROOT = path.resolve(__dirname, "..", "..", "..", "..");
/** The repository's `skillsvc` command. */
export const SKILLSVC_BIN =
  process.env["SKILLSVC_BIN"] ?? path.join(REPO_ROOT, ".venv", "bin", "skillsvc");

/** A ustar archive of `files` (path → content), gzipped; fixed times and owners. */
export function tarGz(files: Record<string, string | Buffer>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === "string" ? Buffer.from(content) : content;
    const header = Buffer.alloc(512);
    header.write(name, 0, 100, "utf8");
    header.write("0000644\0", 100);
    header.write("0000000\0", 108);
    header.write("0000000\0", 116);
    header.write(`${data.length.toString(8).padStart(11, "0")}\0`, 124);
    header.write(`${(1_767_225_600).toString(8).padStart(11, "0")}\0`, 136);
    header.write("        ", 148); // checksum field counts as spaces while summing
    header.write("0", 156);
    header.write("ustar\0", 257);
    header.write("00", 263);
    let sum = 0;
    for (const byte of header) {
      sum += byte;
    }
    header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

/** A valid skill: SKILL.md with front matter, a script and a reference. */
export function skillArchive(name: string, version: string, extra = ""): Buffer {
  return tarGz({
    "SKILL.md": [
      "---",
      `name: ${name}`,
      `description: A test skill${extra}`,
      `version: "${version}"`,
      "---",
      "",
      `# ${name}`,
      "",
    ].join("\n"),
    "scripts/run.py": "print('hello')\n",
    "references/guide.md": `# Guide ${version}\n`,
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === "object") {
          resolve(address.port);
        } else {
          reject(new Error("no port"));
        }
      });
    });
  });
}

/** A running `skillsvc serve`. */
export class Server {
  private constructor(
    readonly address: string,
    readonly dir: string,
    private readonly child: ChildProcess,
    /** Everything the server wrote to stdout and stderr so far. */
    readonly log: () => string,
  ) {}

  /**
   * Start a server and wait until it answers RPCs; `settings` adds SKILLSVC_*
   * variables, and `probe` is the client that waits (for TLS or tokens).
   */
  static async start(
    settings: Record<string, string> = {},
    probe?: (address: string) => SkillsvcClient,
  ): Promise<Server> {
    const dir = await mkdtemp(path.join(tmpdir(), "skillsvc-node-test-"));
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (!key.startsWith("SKILLSVC_")) {
        env[key] = value;
      }
    }
    env["SKILLSVC_LISTEN_ADDR"] = address;
    env["SKILLSVC_DATA_DIR"] = path.join(dir, "data");
    env["SKILLSVC_METRICS_ADDR"] = "";
    env["SKILLSVC_SHUTDOWN_GRACE_SECONDS"] = "2";
    const databaseUrl = process.env["SKILLSVC_NODE_TEST_DATABASE_URL"];
    if (databaseUrl) {
      env["SKILLSVC_DATABASE_URL"] = databaseUrl;
    }
    Object.assign(env, settings);
    const child = spawn(SKILLSVC_BIN, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout?.on("data", (piece: Buffer) => (output += piece.toString()));
    child.stderr?.on("data", (piece: Buffer) => (output += piece.toString()));
    const server = new Server(address, dir, child, () => output);
    const client = probe?.(address) ?? new SkillsvcClient({ address, deadlineMs: 1_000 });
    await server.waitServing(client, 90_000);
    return server;
  }

  private async waitServing(client: SkillsvcClient, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          throw new Error(`skillsvc serve exited early:\n${this.log()}`);
        }
        try {
          await client.listDefinitions();
          // The supervisor says it serves once every worker is up (the first answers
          // before its siblings have started).
          if (/^skillsvc \S+ serving on /m.test(this.log())) {
            return;
          }
        } catch (error) {
          if (Date.now() > deadline) {
            throw new Error(`skillsvc serve did not answer in time:\n${this.log()}`);
          }
          if (!(error instanceof UnavailableError) && !isDeadline(error)) {
            throw error;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    } finally {
      client.close();
    }
  }

  /** A client of this server. */
  client(): SkillsvcClient {
    return new SkillsvcClient({ address: this.address });
  }

  /** Write `data` under the server's temporary directory; returns the path. */
  async file(name: string, data: Buffer): Promise<string> {
    const file = path.join(this.dir, name);
    await writeFile(file, data);
    return file;
  }

  /** SIGTERM by pid, wait for the exit, remove the temporary directory. */
  async stop(): Promise<number | null> {
    let code: number | null = this.child.exitCode;
    if (code === null && this.child.signalCode === null) {
      const exited = new Promise<number | null>((resolve) =>
        this.child.once("exit", (status) => resolve(status)),
      );
      this.child.kill("SIGTERM");
      code = await exited;
    }
    await rm(this.dir, { recursive: true, force: true });
    return code;
  }
}

function isDeadline(error: unknown): boolean {
  return error instanceof Error && error.name === "DeadlineExceededError";
}
