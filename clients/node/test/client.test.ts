/**
 * The Node client against a live `skillsvc serve` (started here, stopped by pid):
 * installs from a file with progress, idempotency, error mapping with the ErrorInfo
 * reason and details, a hostile archive's violation, rollback, and the example
 * script's output and exit codes.
 */

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  AlreadyExistsError,
  InstallFailedError,
  InvalidArgumentError,
  NotFoundError,
  OutOfRangeError,
  SkillsvcClient,
  UnauthenticatedError,
  UnavailableError,
  packFolder,
  sha256File,
  tlsCredentials,
  type InstallEvent,
} from "../src/index";
import { REPO_ROOT, SKILLSVC_BIN, Server, skillArchive, tarGz } from "./helpers";

let server: Server;
let client: SkillsvcClient;

before(async () => {
  server = await Server.start();
  client = server.client();
});

after(async () => {
  client?.close();
  assert.equal(await server?.stop(), 0, server?.log());
});

const STAGE_ORDER: readonly InstallEvent["stage"][] = [
  "INSTALL_STAGE_UNSPECIFIED",
  "INSTALL_STAGE_QUEUED",
  "INSTALL_STAGE_RECEIVING",
  "INSTALL_STAGE_DOWNLOADING",
  "INSTALL_STAGE_VERIFYING",
  "INSTALL_STAGE_EXTRACTING",
  "INSTALL_STAGE_VALIDATING",
  "INSTALL_STAGE_COMMITTING",
  "INSTALL_STAGE_ACTIVATING",
  "INSTALL_STAGE_DONE",
];
const STAGE_NAMES: ReadonlySet<string> = new Set(STAGE_ORDER);

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

describe("definitions", () => {
  test("create, get, list and update", async () => {
    const created = await client.createDefinition({
      skill_id: "node-defs",
      display_name: "Node defs",
      description: "first",
    });
    assert.equal(created.skill_id, "node-defs");
    assert.equal(created.active, true);
    const updated = await client.updateDefinition(
      { skill_id: "node-defs", description: "second" },
      ["description"],
    );
    assert.equal(updated.description, "second");
    assert.equal(updated.display_name, "Node defs");
    assert.equal((await client.getDefinition("node-defs")).description, "second");
    const ids = (await client.listDefinitions()).map((d) => d.skill_id);
    assert.ok(ids.includes("node-defs"));
  });

  test("errors carry the code, the ErrorInfo reason and the bad field", async () => {
    await assert.rejects(client.getDefinition("no-such-skill"), (error: unknown) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.codeName, "NOT_FOUND");
      assert.equal(error.domain, "skillsvc.v1");
      assert.ok(error.reason.length > 0);
      return true;
    });
    await assert.rejects(client.createDefinition({ skill_id: "PDF_Tools" }), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.equal(error.fieldViolations[0]?.field, "definition.skill_id");
      assert.match(error.describe(), /^INVALID_ARGUMENT.*definition\.skill_id/);
      return true;
    });
    await client.createDefinition({ skill_id: "node-twice" });
    await assert.rejects(client.createDefinition({ skill_id: "node-twice" }), AlreadyExistsError);
  });
});

describe("installs", () => {
  test("an archive file installs with every stage, its sha256 and a request id", async () => {
    await client.createDefinition({ skill_id: "node-pdf" });
    const data = skillArchive("node-pdf", "1.0.0");
    const file = await server.file("node-pdf-1.0.0.tgz", data);
    const operation = await client.installFile("node-pdf", file, { requestId: "node-pdf-1" });
    assert.equal(operation.skill_id, "node-pdf");
    const events: InstallEvent[] = [];
    const done = await client.wait(operation.operation_id, (event) => events.push(event));
    assert.equal(done.stage, "INSTALL_STAGE_DONE");
    assert.equal(done.state, "OPERATION_STATE_SUCCEEDED");
    // The current stage first, then each change (byte counts too), never backwards.
    const order = events.map((e) => STAGE_ORDER.indexOf(e.stage));
    assert.ok(order.every((rank, i) => rank > 0 && (i === 0 || rank >= (order[i - 1] ?? 0))));
    assert.equal(events.at(-1)?.stage, "INSTALL_STAGE_DONE");
    const pkg = await client.getPackage("node-pdf");
    assert.equal(pkg.state, "PACKAGE_STATE_READY");
    assert.equal(pkg.version, "1.0.0");
    assert.equal(pkg.current, true);
    assert.equal(pkg.sha256, sha256(data));
    assert.equal(pkg.size_bytes, data.length);
    assert.equal(pkg.manifest?.name, "node-pdf");
    // The same request id again returns the first operation instead of a new install.
    const again = await client.installFile("node-pdf", file, { requestId: "node-pdf-1" });
    assert.equal(again.operation_id, operation.operation_id);
    // The same bytes under a new request id: a no-op success on the same version.
    const repeat = await client.installAndWait("node-pdf", file);
    assert.equal(repeat.stage, "INSTALL_STAGE_DONE");
    const packages = await client.listPackages("node-pdf");
    assert.deepEqual(
      packages.map((p) => [p.version, p.sha256]),
      [["1.0.0", sha256(data)]],
    );
  });

  test("a folder packs to the same sha256 every time; the second install is a no-op", async () => {
    await client.createDefinition({ skill_id: "node-folder" });
    const folder = path.join(server.dir, "node-folder");
    await mkdir(path.join(folder, "scripts"), { recursive: true });
    await mkdir(path.join(folder, ".git"));
    await mkdir(path.join(folder, "__pycache__"));
    await writeFile(
      path.join(folder, "SKILL.md"),
      '---\nname: node-folder\ndescription: from a folder\nversion: "1.0.0"\n---\n',
    );
    await writeFile(path.join(folder, "scripts", "run.sh"), "#!/bin/sh\necho hi\n");
    await chmod(path.join(folder, "scripts", "run.sh"), 0o750);
    await writeFile(path.join(folder, ".git", "config"), "[core]\n");
    await writeFile(path.join(folder, "__pycache__", "x.cpython-311.pyc"), "junk");
    await writeFile(path.join(folder, ".DS_Store"), "junk");

    const first = await packFolder(folder, path.join(server.dir, "first.tgz"));
    assert.deepEqual(first.files, ["SKILL.md", "scripts/run.sh"]);
    // Touching every file (new times) changes nothing in the archive.
    const later = new Date(Date.now() + 3_600_000);
    await utimes(path.join(folder, "SKILL.md"), later, later);
    await utimes(path.join(folder, "scripts", "run.sh"), later, later);
    const second = await packFolder(folder, path.join(server.dir, "second.tgz"));
    const digest = await sha256File(first.path);
    assert.equal(await sha256File(second.path), digest);

    const events: InstallEvent[][] = [[], []];
    await client.installAndWait("node-folder", folder, {}, (e) => events[0]?.push(e));
    const repeat = await client.installAndWait("node-folder", folder, {}, (e) =>
      events[1]?.push(e),
    );
    assert.equal(repeat.stage, "INSTALL_STAGE_DONE");
    const packages = await client.listPackages("node-folder");
    assert.deepEqual(
      packages.map((p) => [p.version, p.sha256, p.state]),
      [["1.0.0", digest, "PACKAGE_STATE_READY"]],
    );
    const operations = await client.listOperations("node-folder");
    assert.equal(operations.length, 2);
    assert.ok(operations.every((o) => o.state === "OPERATION_STATE_SUCCEEDED"));
    // Only the exec bit travels: the installed script is executable.
    const installed = await stat(path.join(packages[0]?.path ?? "", "scripts", "run.sh"));
    assert.notEqual(installed.mode & 0o100, 0);
  });

  test("an archive bigger than one chunk streams in 1 MiB chunks", async () => {
    await client.createDefinition({ skill_id: "node-big" });
    // Random bytes do not compress: the archive is about 2.5 MiB, three chunks.
    const blob = Buffer.alloc(2_500_000);
    for (let i = 0; i < blob.length; i += 4) {
      blob.writeUInt32LE((Math.random() * 0xffffffff) >>> 0, i);
    }
    const data = tarGz({
      "SKILL.md": '---\nname: node-big\ndescription: big\nversion: "1.0.0"\n---\n',
      "assets/blob.bin": blob,
    });
    assert.ok(data.length > 2 * (1 << 20));
    const file = await server.file("node-big.tgz", data);
    const done = await client.installAndWait("node-big", file);
    assert.equal(done.bytes_total, data.length);
    assert.equal((await client.getPackage("node-big")).sha256, sha256(data));
  });

  test("a hostile archive fails with the violation named", async () => {
    await client.createDefinition({ skill_id: "node-evil" });
    const data = tarGz({
      "SKILL.md": '---\nname: node-evil\ndescription: evil\nversion: "1.0.0"\n---\n',
      "../../escape.sh": "rm -rf /\n",
    });
    const file = await server.file("node-evil.tgz", data);
    await assert.rejects(client.installAndWait("node-evil", file), (error: unknown) => {
      assert.ok(error instanceof InstallFailedError);
      assert.equal(error.codeName, "INVALID_ARGUMENT");
      const codes = error.validationReport?.violations.map((v) => v.code) ?? [];
      assert.ok(codes.includes("PATH_TRAVERSAL"), codes.join());
      assert.match(error.describe(), /PATH_TRAVERSAL/);
      return true;
    });
    const packages = await client.listPackages("node-evil");
    assert.ok(packages.every((p) => p.state !== "PACKAGE_STATE_READY"));
  });

  test("installing into an unknown skill is NOT_FOUND", async () => {
    const file = await server.file("orphan.tgz", skillArchive("node-orphan", "1.0.0"));
    await assert.rejects(client.installFile("node-orphan", file), NotFoundError);
  });

  test("rollback returns to the previous version; the log lists every operation", async () => {
    await client.createDefinition({ skill_id: "node-roll" });
    for (const version of ["1.0.0", "1.1.0"]) {
      const file = await server.file(`roll-${version}.tgz`, skillArchive("node-roll", version));
      await client.installAndWait("node-roll", file);
    }
    assert.equal((await client.getPackage("node-roll")).version, "1.1.0");
    const rollback = await client.rollback("node-roll", { reason: "bad release" });
    assert.equal(rollback.state, "OPERATION_STATE_SUCCEEDED");
    assert.equal(rollback.from_version, "1.1.0");
    assert.equal(rollback.to_version, "1.0.0");
    assert.equal((await client.getPackage("node-roll")).version, "1.0.0");
    const log = await client.listOperations("node-roll");
    assert.deepEqual(
      log.map((o) => o.type),
      ["OPERATION_TYPE_ROLLBACK", "OPERATION_TYPE_INSTALL", "OPERATION_TYPE_INSTALL"],
    );
  });
});

interface Ran {
  code: number | null;
  out: string;
  err: string;
}

async function runNode(script: string, args: string[], cwd?: string): Promise<Ran> {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, SKILLSVC_ADDR: server.address },
    stdio: ["ignore", "pipe", "pipe"],
    ...(cwd === undefined ? {} : { cwd }),
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (piece: Buffer) => (out += piece.toString()));
  child.stderr.on("data", (piece: Buffer) => (err += piece.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  return { code, out, err };
}

function runExample(...args: string[]): Promise<Ran> {
  return runNode(path.join(__dirname, "..", "examples", "install.js"), args);
}

function assertExampleOutput(ran: Ran, skill: string, version: string): void {
  assert.equal(ran.code, 0, ran.err);
  const lines = ran.out.trim().split("\n");
  assert.equal(lines[0], `created skill ${skill}`);
  assert.match(lines[1] ?? "", /^operation [0-9a-f-]{36}$/);
  // One line per event (from the stage the install had reached when the watch began).
  const stages = lines.slice(2, -1).map((l) => l.split(" ")[0]);
  assert.ok(stages.length > 0, ran.out);
  assert.ok(stages.every((s) => STAGE_NAMES.has(`INSTALL_STAGE_${s ?? ""}`)), ran.out);
  assert.equal(stages.at(-1), "DONE", ran.out);
  assert.ok((lines.at(-1) ?? "").startsWith(`installed ${skill} ${version} sha256 `), ran.out);
}

describe("watching skills", () => {
  test("changes stream live, and a watch resumes from since without loss or repeat", async () => {
    const live = client.watchSkills({ skillIds: ["node-watch-a", "node-watch-b"] });
    const synced = (await live.next()).value;
    assert.equal(synced?.type, "SKILL_EVENT_TYPE_SYNCED");
    await client.createDefinition({ skill_id: "node-watch-a", description: "a" });
    const created = (await live.next()).value;
    assert.equal(created?.type, "SKILL_EVENT_TYPE_DEFINITION_CREATED");
    assert.equal(created?.skill_id, "node-watch-a");
    await live.return(undefined); // hangs up
    // Made while nobody watches: the resumed watch replays it, then SYNCED.
    await client.createDefinition({ skill_id: "node-watch-b", description: "b" });
    const resumed = client.watchSkills({
      skillIds: ["node-watch-a", "node-watch-b"],
      since: created?.seq,
    });
    const replayed = (await resumed.next()).value;
    assert.equal(replayed?.type, "SKILL_EVENT_TYPE_DEFINITION_CREATED");
    assert.equal(replayed?.skill_id, "node-watch-b");
    assert.ok((replayed?.seq ?? 0) > (created?.seq ?? 0));
    assert.equal((await resumed.next()).value?.type, "SKILL_EVENT_TYPE_SYNCED");
    await resumed.return(undefined);
  });

  test("a quiet watch gets a position marker past changes it does not see", { timeout: 30_000 }, async () => {
    // A server keeping 2 s of history marks a quiet stream's position every 0.5 s:
    // the client yields the marker and resumes from its seq like any other.
    const quick = await Server.start({ SKILLSVC_WATCH_RETENTION: "2s" });
    const own = quick.client();
    try {
      const watch = own.watchSkills({ skillIds: ["node-quiet"] });
      const first = (await watch.next()).value;
      assert.equal(first?.type, "SKILL_EVENT_TYPE_SYNCED");
      await own.createDefinition({ skill_id: "node-busy", description: "not watched" });
      const marker = (await watch.next()).value;
      assert.equal(marker?.type, "SKILL_EVENT_TYPE_SYNCED");
      assert.equal(Number(marker?.seq), Number(first?.seq) + 1);
      await watch.return(undefined);
    } finally {
      own.close();
      assert.equal(await quick.stop(), 0, quick.log());
    }
  });

  test("a since the server does not keep is OUT_OF_RANGE", async () => {
    await assert.rejects(
      async () => {
        for await (const _ of client.watchSkills({ since: 1_000_000_000 })) {
          // never reached
        }
      },
      (error: unknown) =>
        error instanceof OutOfRangeError && error.reason === "SINCE_UNKNOWN",
    );
  });
});

describe("the example script", () => {
  test("uploads an archive, prints each stage and exits 0", async () => {
    const file = await server.file("example.tgz", skillArchive("node-example", "2.0.0"));
    const ran = await runExample(file, "--skill", "node-example", "--create");
    assertExampleOutput(ran, "node-example", "2.0.0");
  });

  test("packs and uploads a folder", async () => {
    const folder = path.join(server.dir, "example-folder");
    await mkdir(folder);
    await writeFile(
      path.join(folder, "SKILL.md"),
      '---\nname: node-example-folder\ndescription: d\nversion: "3.0.0"\n---\n',
    );
    const ran = await runExample(folder, "--skill", "node-example-folder", "--create");
    assertExampleOutput(ran, "node-example-folder", "3.0.0");
  });

  test("exits 1 naming the violation when the install fails", async () => {
    await client.createDefinition({ skill_id: "node-example-bad" });
    const data = tarGz({ "README.md": "no SKILL.md here\n" });
    const file = await server.file("example-bad.tgz", data);
    const ran = await runExample(file, "--skill", "node-example-bad");
    assert.equal(ran.code, 1);
    assert.ok(ran.out.split("\n").some((l) => l.startsWith("FAILED")), ran.out);
    assert.match(ran.err, /^install failed: INVALID_ARGUMENT.*MISSING_SKILL_MD/);
  });

  test("exits 2 on bad usage", async () => {
    const ran = await runExample("--skill", "x");
    assert.equal(ran.code, 2);
    assert.match(ran.err, /usage: install FOLDER\|ARCHIVE/);
  });
});

describe("the README", () => {
  test("the Node example works as written", async () => {
    const readme = await readFile(path.join(REPO_ROOT, "README.md"), "utf8");
    const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
    assert.equal(blocks.length, 1);
    const [importLine = "", ...body] = (blocks[0] ?? "").split("\n");
    // The one change: the package import becomes a require of the built package,
    // and the body runs in an async function (the README shows ES module code).
    const names = /^import \{ (.*) \} from "@skillsvc\/client";$/.exec(importLine)?.[1];
    assert.ok(names, importLine);
    const index = path.join(__dirname, "..", "src", "index.js");
    const script = [
      `const { ${names} } = require(${JSON.stringify(index)});`,
      "(async () => {",
      body.join("\n").replaceAll("127.0.0.1:50051", server.address),
      "})().catch((error) => { console.error(error); process.exitCode = 1; });",
    ].join("\n");
    const dir = path.join(server.dir, "readme");
    await mkdir(dir);
    await writeFile(path.join(dir, "example.js"), script);
    await mkdir(path.join(dir, "pdf-tools"));
    await writeFile(
      path.join(dir, "pdf-tools", "SKILL.md"),
      '---\nname: pdf-tools\ndescription: PDF text and tables\nversion: "1.0.0"\n---\n',
    );
    const ran = await runNode(path.join(dir, "example.js"), [], dir);
    assert.equal(ran.code, 0, ran.err);
    const stages = ran.out.trim().split("\n").map((line) => line.split(" ")[0]);
    assert.ok(stages.every((s) => STAGE_NAMES.has(s ?? "")), ran.out);
    assert.equal(stages.at(-1), "INSTALL_STAGE_DONE");
    assert.equal((await client.getPackage("pdf-tools")).state, "PACKAGE_STATE_READY");
  });
});

function openssl(dir: string, ...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

describe("tokens and mutual TLS", () => {
  let dir: string;
  let secure: Server | undefined;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "skillsvc-node-tls-"));
    // The README's recipe: a private CA, a server certificate for 127.0.0.1, a client one.
    openssl(dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
      "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem");
    openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout", "server.key", "-out", "server.csr");
    openssl(dir, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
      "-CAcreateserial", "-days", "1", "-copy_extensions", "copy", "-out", "server.pem");
    openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=node-client",
      "-keyout", "client.key", "-out", "client.csr");
    openssl(dir, "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
      "-CAcreateserial", "-days", "1", "-out", "client.pem");
  });

  after(async () => {
    assert.equal(await secure?.stop(), 0, secure?.log());
    await rm(dir, { recursive: true, force: true });
  });

  test("a token over mutual TLS is accepted; no token is UNAUTHENTICATED", async () => {
    const secret = createHash("sha256").update(dir).digest("hex");
    const token = execFileSync(
      SKILLSVC_BIN,
      ["token", "--sub", "node-admin", "--tenant", "", "--role", "admin", "--ttl", "10m"],
      { env: { PATH: process.env["PATH"] ?? "", SKILLSVC_JWT_SECRET: secret } },
    )
      .toString()
      .trim();
    const [ca, key, cert] = await Promise.all(
      ["ca.pem", "client.key", "client.pem"].map((name) => readFile(path.join(dir, name))),
    );
    const credentials = (): ReturnType<typeof tlsCredentials> =>
      tlsCredentials(ca as Buffer, key as Buffer, cert as Buffer);
    secure = await Server.start(
      {
        SKILLSVC_AUTH: "jwt",
        SKILLSVC_JWT_SECRET: secret,
        SKILLSVC_TLS_CERT_FILE: path.join(dir, "server.pem"),
        SKILLSVC_TLS_KEY_FILE: path.join(dir, "server.key"),
        SKILLSVC_TLS_CLIENT_CA_FILE: path.join(dir, "ca.pem"),
      },
      (address) =>
        new SkillsvcClient({ address, credentials: credentials(), token, deadlineMs: 1_000 }),
    );
    const address = secure.address;
    const authorised = new SkillsvcClient({ address, credentials: credentials(), token });
    const anonymous = new SkillsvcClient({ address, credentials: credentials() });
    const noCertificate = new SkillsvcClient({
      address,
      credentials: tlsCredentials(ca as Buffer),
      token,
      deadlineMs: 5_000,
    });
    try {
      const created = await authorised.createDefinition({ skill_id: "node-secure" });
      assert.equal(created.skill_id, "node-secure");
      const ids = (await authorised.listDefinitions()).map((d) => d.skill_id);
      assert.ok(ids.includes("node-secure"));
      await assert.rejects(anonymous.listDefinitions(), (error: unknown) => {
        assert.ok(error instanceof UnauthenticatedError);
        assert.equal(error.reason, "TOKEN_MISSING");
        return true;
      });
      // The server requires a client certificate: the handshake fails.
      await assert.rejects(noCertificate.listDefinitions(), UnavailableError);
    } finally {
      authorised.close();
      anonymous.close();
      noCertificate.close();
    }
  });
});

describe("the README's example command", () => {
  test("runs as written from a checkout", async () => {
    const readme = await readFile(path.join(REPO_ROOT, "README.md"), "utf8");
    const lines = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)]
      .flatMap((m) => (m[1] ?? "").split("\n"))
      .filter((line) => line.includes("dist/examples/install.js"));
    assert.equal(lines.length, 1);
    // A directory that looks like the checkout's root: clients/ and a skill folder.
    const dir = path.join(server.dir, "checkout");
    await mkdir(path.join(dir, "pdf-tools"), { recursive: true });
    await symlink(path.join(REPO_ROOT, "clients"), path.join(dir, "clients"));
    await writeFile(
      path.join(dir, "pdf-tools", "SKILL.md"),
      '---\nname: pdf-tools\ndescription: PDF text and tables\nversion: "1.1.0"\n---\n',
    );
    const child = spawn("sh", ["-c", lines[0] ?? ""], {
      cwd: dir,
      env: { ...process.env, SKILLSVC_ADDR: server.address },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (piece: Buffer) => (out += piece.toString()));
    child.stderr.on("data", (piece: Buffer) => (err += piece.toString()));
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
    assert.equal(code, 0, err);
    assert.ok(out.trim().split("\n").at(-1)?.startsWith("installed pdf-tools 1.1.0 sha256 "), out);
  });
});
